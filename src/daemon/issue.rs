//! `certd issue` handed to a running daemon over the control socket: renew in-process, publish what
//! was issued, and reply with the lines and exit code the CLI prints.

use super::load::publish;
use super::{Reply, Shared};
use crate::exit::{EXIT_OK, EXIT_SOME_FAILED, EXIT_UNUSABLE};
use crate::renewal::Outcome;

impl Shared {
    /// `certd issue` handed to the daemon: renew the named sites (all when none) now when due, or
    /// anyway with `force`, publish what was issued, and report like the CLI does.
    pub(super) async fn issue(&self, force: bool, names: &[String]) -> Vec<Reply> {
        drop(self.initial_load.lock().await);
        let config = self.config.load_full();
        let sites = match config.select_sites(names) {
            Ok(sites) => sites,
            Err(message) => return vec![Reply::Err(message), Reply::Exit(EXIT_UNUSABLE)],
        };
        let renewer = self.renewer.borrow().clone();
        let outcomes = match renewer.issue_now(&sites, force).await {
            Ok(outcomes) => outcomes,
            Err(err) => return vec![Reply::Err(err.to_string()), Reply::Exit(EXIT_UNUSABLE)],
        };
        let mut replies = Vec::with_capacity(sites.len() + 1);
        let mut failed = false;
        for (name, outcome) in outcomes {
            if let (Outcome::Issued { pem, .. }, Some(site)) =
                (&outcome, sites.iter().find(|site| site.name() == name))
            {
                publish(&self.resolver, site, pem);
            }
            match outcome.report(&name) {
                Ok(line) => replies.push(Reply::Out(line)),
                Err(line) => {
                    failed = true;
                    replies.push(Reply::Err(line));
                }
            }
        }
        self.scheduler.wake();
        replies.push(Reply::Exit(if failed { EXIT_SOME_FAILED } else { EXIT_OK }));
        replies
    }
}
