//! `certd import nginx`: the two user stories' nginx configurations (the fixtures beside the
//! translator, taken from shared/seeds) are translated by the real binary, appended to a certd.toml
//! that has `[acme]` and `[http]`, and `certd check` accepts the result. Unsupported directives make
//! the exit code 1 and are listed with file and line; a file nginx itself would refuse makes it 2.

use std::path::{Path, PathBuf};

use crate::harness::{free_port, Certd};

const TERRAX9: &str = include_str!("../../src/import/nginx/fixtures/terrax9.conf");
const TERRAX9_BEFORE_CERTBOT: &str =
    include_str!("../../src/import/nginx/fixtures/terrax9.before-certbot.conf");
const TOGETHERERS: &str = include_str!("../../src/import/nginx/fixtures/togetherers.conf");
const TOGETHERERS_VERBATIM_443: &str =
    include_str!("../../src/import/nginx/fixtures/togetherers.verbatim-443.conf");

/// Writes `text` to `name` in the working folder and returns its path.
fn write(certd: &Certd, name: &str, text: &str) -> PathBuf {
    let path = certd.dir().join(name);
    std::fs::write(&path, text).expect("write nginx file");
    path
}

/// Runs `certd import nginx FILE...` in `certd`'s folder (a macro: the harness does not export the
/// type of a finished run).
macro_rules! import {
    ($certd:expr, $($file:expr),+ $(,)?) => {{
        let files: Vec<String> = [$($file.display().to_string()),+].into();
        let mut args = vec!["nginx"];
        args.extend(files.iter().map(String::as_str));
        $certd.run("import", &args).await
    }};
}

/// certd.toml: the tables the fragment expects to exist, then the fragment.
fn config_with(fragment: &str) -> String {
    format!(
        "state_dir = \"state\"\n\n[acme]\ndirectory = \"letsencrypt\"\nemail = \
         \"ops@certd-e2e.example.com\"\nagree_tos = true\n\n[http]\nlisten = \
         [\"127.0.0.1:{}\"]\n\n{fragment}",
        free_port()
    )
}

/// Imports `files`, expects exit 0, writes certd.toml with the fragment, and expects `certd check`
/// to accept it. Returns the fragment.
async fn import_and_check(certd: &Certd, files: &[&Path]) -> String {
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut args = vec!["nginx"];
    args.extend(files.iter().map(String::as_str));
    let run = certd.run("import", &args).await;
    run.expect_code(0);
    assert!(
        !run.stdout.contains("# untranslated ("),
        "everything should translate:\n{run}"
    );
    certd.write_config_text(&config_with(&run.stdout));
    certd.check().await.expect_code(0);
    run.stdout
}

#[tokio::test]
async fn terrax9_after_certbot_imports_and_checks() {
    let certd = Certd::new();
    let nginx = write(&certd, "terrax9", TERRAX9);
    let fragment = import_and_check(&certd, &[&nginx]).await;
    assert_eq!(fragment.matches("[[site]]").count(), 1, "{fragment}");
    assert!(fragment.contains("names = [\"terrax9.se\", \"www.terrax9.se\"]"));
    assert!(fragment.contains("proxy = \"http://localhost:8080\""));
    // certbot's :80 block is the https redirect certd does by itself.
    assert!(fragment.contains(&format!("translated ({}:21,25,29,31)", nginx.display())));
}

#[tokio::test]
async fn terrax9_before_certbot_imports_and_checks() {
    let certd = Certd::new();
    let nginx = write(&certd, "terrax9", TERRAX9_BEFORE_CERTBOT);
    let fragment = import_and_check(&certd, &[&nginx]).await;
    assert!(fragment.contains("names = [\"terrax9.se\", \"www.terrax9.se\"]"));
    assert!(fragment.contains("plain http: certd serves these names over https"));
}

#[tokio::test]
async fn togetherers_imports_and_checks() {
    let certd = Certd::new();
    // The seed's placeholder root, made a real folder with the error pages it names.
    let www = certd.dir().join("www");
    std::fs::create_dir(&www).expect("mkdir www");
    std::fs::write(www.join("404.html"), "not here").expect("write 404.html");
    std::fs::write(www.join("50x.html"), "oops").expect("write 50x.html");
    let text = TOGETHERERS.replace("<your-static-files-path>", &www.display().to_string());
    let nginx = write(&certd, "togetherers", &text);
    let fragment = import_and_check(&certd, &[&nginx]).await;

    let value: toml::Value = toml::from_str(&fragment).expect("the fragment is TOML");
    let site = &value["site"][0];
    assert_eq!(
        site["names"],
        toml::Value::Array(vec!["togetherers.com".into(), "www.togetherers.com".into()])
    );
    let routes: Vec<(String, String)> = site["route"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|route| {
            let target = route.get("proxy").or(route.get("root")).expect("target");
            (
                route["path"].as_str().expect("path").to_owned(),
                target.as_str().expect("target").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("/".to_owned(), www.display().to_string()),
            ("/ws".to_owned(), "http://localhost:8081".to_owned()),
        ]
    );
    let pages = site["error_pages"].as_table().expect("error_pages");
    let codes: Vec<&str> = pages.keys().map(String::as_str).collect();
    assert_eq!(codes, ["404", "500", "502", "503", "504"]);
    assert_eq!(
        pages["404"].as_str(),
        Some(www.join("404.html").display().to_string().as_str())
    );
    assert_eq!(
        pages["502"].as_str(),
        Some(www.join("50x.html").display().to_string().as_str())
    );
}

#[tokio::test]
async fn both_files_of_a_story_at_once_make_one_site() {
    let certd = Certd::new();
    let before = write(&certd, "terrax9.before", TERRAX9_BEFORE_CERTBOT);
    let after = write(&certd, "terrax9.after", TERRAX9);
    let fragment = import_and_check(&certd, &[&after, &before]).await;
    assert_eq!(fragment.matches("[[site]]").count(), 1, "{fragment}");
    assert_eq!(fragment.matches("[[site.route]]").count(), 1, "{fragment}");
}

#[tokio::test]
async fn the_seeds_slash_comment_is_refused_with_file_and_line() {
    let certd = Certd::new();
    let nginx = write(&certd, "togetherers", TOGETHERERS_VERBATIM_443);
    let run = import!(certd, nginx);
    run.expect_code(2);
    assert_eq!(run.stdout, "", "nothing to append on error:\n{run}");
    let expected = format!(
        "{}:3: `//` does not start a comment in nginx",
        nginx.display()
    );
    assert!(run.stderr.contains(&expected), "{run}");
}

#[tokio::test]
async fn an_unreadable_file_is_exit_2() {
    let certd = Certd::new();
    let missing = certd.dir().join("missing.conf");
    let run = import!(certd, missing);
    run.expect_code(2);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("missing.conf: cannot read"), "{run}");
}

#[tokio::test]
async fn unsupported_directives_are_listed_and_exit_1() {
    let certd = Certd::new();
    let text =
        "upstream app {\n    server 127.0.0.1:8080;\n}\n\nserver {\n    listen 443 ssl;\n    \
                server_name shop.example.com;\n    include snippets/headers.conf;\n    \
                add_header X-Frame-Options DENY;\n    location / {\n        proxy_pass \
                http://127.0.0.1:9000;\n        try_files $uri @app;\n    }\n    location ~ \
                \\.php$ {\n        fastcgi_pass unix:/run/php.sock;\n    }\n}\n";
    let nginx = write(&certd, "shop", text);
    let run = import!(certd, nginx);
    run.expect_code(1);
    let file = nginx.display();
    for (line, directive) in [
        (1, "upstream app { server 127.0.0.1:8080; }"),
        (8, "include snippets/headers.conf;"),
        (9, "add_header X-Frame-Options DENY;"),
        (12, "try_files $uri @app;"),
        (
            14,
            "location ~ \\.php$ { fastcgi_pass unix:/run/php.sock; }",
        ),
    ] {
        let comment = format!("# untranslated ({file}:{line}): {directive}");
        assert!(run.stdout.contains(&comment), "missing {comment:?}\n{run}");
    }
    assert!(
        run.stderr
            .contains("5 directive(s) could not be translated"),
        "{run}"
    );
    // What did translate is still a valid site.
    certd.write_config_text(&config_with(&run.stdout));
    certd.check().await.expect_code(0);
}
