//! Validation of what operators watch and plug in: `[status]` thresholds, `[metrics]`, `[hook]`.

use std::net::SocketAddr;

use toml::Spanned;

use super::problems::Problems;
use super::raw::{RawHook, RawMetrics, RawPreflight, RawStatus};
use super::OperationsConfig;

pub(super) fn operations(
    status: Option<Spanned<RawStatus>>,
    metrics: Option<Spanned<RawMetrics>>,
    hook: Option<Spanned<RawHook>>,
    preflight: Option<Spanned<RawPreflight>>,
    problems: &mut Problems<'_>,
) -> OperationsConfig {
    let mut operations = OperationsConfig::default();
    if let Some(status) = status {
        let span = status.span();
        let status = status.into_inner();
        for (key, value, into) in [
            (
                "status.warn_days",
                status.warn_days,
                &mut operations.warn_days,
            ),
            (
                "status.critical_days",
                status.critical_days,
                &mut operations.critical_days,
            ),
        ] {
            if let Some(value) = value {
                if (0..=3650).contains(value.get_ref()) {
                    *into = *value.get_ref();
                } else {
                    problems.add(key, Some(value.span()), "must be between 0 and 3650 days");
                }
            }
        }
        if operations.critical_days > operations.warn_days {
            problems.add(
                "status.critical_days",
                Some(span),
                format!(
                    "{} is more than warn_days ({}): critical must not come before warning",
                    operations.critical_days, operations.warn_days
                ),
            );
        }
    }
    if let Some(listen) = metrics.and_then(|table| table.into_inner().listen) {
        match listen.get_ref().parse::<SocketAddr>() {
            Ok(addr) => operations.metrics_listen = Some(addr),
            Err(_) => problems.add(
                "metrics.listen",
                Some(listen.span()),
                format!(
                    "`{}` is not an IP address with a port, such as \"127.0.0.1:9443\"",
                    listen.get_ref()
                ),
            ),
        }
    }
    if let Some(hook) = hook {
        let span = hook.span();
        match hook.into_inner().command {
            Some(command) if command.get_ref().first().is_some_and(|program| !program.is_empty()) => {
                operations.hook = Some(command.into_inner());
            }
            Some(command) => problems.add(
                "hook.command",
                Some(command.span()),
                "is empty: give the program and its arguments, e.g. [\"/usr/local/bin/reload-mail\"]",
            ),
            None => problems.add(
                "hook.command",
                Some(span),
                "missing: [hook] needs `command = [\"/path/to/program\", \"arg\"]`",
            ),
        }
    }
    if let Some(preflight) = preflight.map(Spanned::into_inner) {
        if let Some(enabled) = preflight.enabled {
            operations.preflight = *enabled.get_ref();
        }
        if let Some(resolver) = preflight.resolver {
            match resolver.get_ref().parse::<SocketAddr>() {
                Ok(addr) => operations.preflight_resolver = Some(addr),
                Err(_) => problems.add(
                    "preflight.resolver",
                    Some(resolver.span()),
                    format!(
                        "`{}` is not a DNS server address with a port, such as \"127.0.0.1:53\"",
                        resolver.get_ref()
                    ),
                ),
            }
        }
    }
    operations
}
