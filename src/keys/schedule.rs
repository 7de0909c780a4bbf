//! Schedule safety: what `config check` reports and the server logs on every (re)load.
//!
//! A pure function of the config, the shared publication history (from the store) and `now`.

use std::collections::HashMap;
use std::time::Duration;

use crate::clock::{UnixMs, duration_ms};
use crate::config::{Config, format_timestamp};
use crate::store::KeyPublication;

/// How far ahead a coming end of all signing is worth a warning.
const END_WARNING_HORIZON: Duration = Duration::from_secs(30 * 86_400);

pub fn schedule_warnings(config: &Config, history: &[KeyPublication], now: UnixMs) -> Vec<String> {
    let mut warnings = Vec::new();
    let max_age = duration_ms(config.jwks.max_age);
    let recorded: HashMap<&str, &KeyPublication> =
        history.iter().map(|p| (p.kid.as_str(), p)).collect();
    let live: Vec<_> = config.keys.iter().filter(|k| !k.revoked).collect();
    // A key not yet in the history would be first published now.
    let first_published = |kid: &str| recorded.get(kid).map_or(now, |p| p.first_published);

    // 1. Published too shortly before it signs: a resource server's cached JWKS may lack it.
    for key in &live {
        let first = first_published(&key.kid);
        let is_rotation = history
            .iter()
            .any(|p| p.kid != key.kid && p.first_published < first);
        let window_open = now < key.not_before.max(first) + max_age;
        if is_rotation && key.not_before < first + max_age && window_open {
            warnings.push(format!(
                "keys {}: signs from {}, less than jwks.max_age ({}s) after it was first published \
                 ({}); resource servers may hold a cached JWKS without it. Set not_before to {} or later",
                key.kid,
                format_timestamp(key.not_before),
                config.jwks.max_age.as_secs(),
                format_timestamp(first),
                format_timestamp(first + max_age),
            ));
        }
    }

    // 2. Instants with no key to sign, from now on.
    let mut windows: Vec<(UnixMs, UnixMs)> =
        live.iter().map(|k| (k.not_before, k.not_after)).collect();
    windows.sort_unstable();
    let mut covered_until = now;
    for (start, end) in windows {
        if end <= covered_until {
            continue;
        }
        if start > covered_until {
            warnings.push(format!(
                "keys: no key signs from {} to {}",
                format_timestamp(covered_until),
                format_timestamp(start)
            ));
        }
        covered_until = end;
    }
    if covered_until <= now {
        warnings.push("keys: no key signs now".to_string());
    } else if covered_until - now < duration_ms(END_WARNING_HORIZON) {
        warnings.push(format!(
            "keys: no key is scheduled to sign after {}; add the next key now",
            format_timestamp(covered_until)
        ));
    }

    // 3. Removed from the config while tokens it signed may still be presented.
    for publication in history {
        let in_config = config.keys.iter().any(|k| k.kid == publication.kid);
        if !in_config && now < publication.publish_until {
            warnings.push(format!(
                "keys {}: removed from the config, but tokens it signed may be valid until {}; keep \
                 it until then (or set revoked = true to pull it on purpose)",
                publication.kid,
                format_timestamp(publication.publish_until)
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_timestamp;

    fn at(s: &str) -> UnixMs {
        parse_timestamp("t", s).unwrap()
    }

    fn config(keys: &[(&str, &str, &str, bool)]) -> Config {
        let mut text = String::from(
            "issuer = \"https://x\"\nlisten = \"127.0.0.1:0\"\n[tokens]\naccess_ttl = \"10m\"\nleeway = \"0s\"\n[jwks]\nmax_age = \"1h\"\n",
        );
        for (kid, nb, na, revoked) in keys {
            text.push_str(&format!(
                "[[keys]]\nkid = \"{kid}\"\nalg = \"ES256\"\npath = \"{kid}.pem\"\nnot_before = \"{nb}\"\nnot_after = \"{na}\"\nrevoked = {revoked}\n"
            ));
        }
        Config::parse(&text, |_| None).unwrap()
    }

    fn published(kid: &str, first: &str, until: &str) -> KeyPublication {
        KeyPublication {
            kid: kid.into(),
            first_published: at(first),
            publish_until: at(until),
        }
    }

    #[test]
    fn a_safe_schedule_has_no_warnings() {
        let c = config(&[
            ("a", "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", false),
            ("b", "2026-05-01T00:00:00Z", "2027-01-01T00:00:00Z", false),
        ]);
        let history = [
            published("a", "2025-12-01T00:00:00Z", "2026-06-01T00:10:00Z"),
            published("b", "2026-04-01T00:00:00Z", "2027-01-01T00:10:00Z"),
        ];
        assert_eq!(
            schedule_warnings(&c, &history, at("2026-04-15T00:00:00Z")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn first_deploy_of_a_key_that_signs_at_once_is_fine() {
        let c = config(&[("a", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z", false)]);
        assert!(schedule_warnings(&c, &[], at("2026-04-15T00:00:00Z")).is_empty());
    }

    #[test]
    fn a_new_key_signing_within_max_age_of_publication_warns() {
        let c = config(&[
            ("a", "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", false),
            ("b", "2026-04-15T00:30:00Z", "2027-01-01T00:00:00Z", false),
        ]);
        let history = [published(
            "a",
            "2025-12-01T00:00:00Z",
            "2026-06-01T00:10:00Z",
        )];
        let w = schedule_warnings(&c, &history, at("2026-04-15T00:00:00Z"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("keys b: signs from 2026-04-15T00:30:00Z"),
            "{w:?}"
        );
        assert!(w[0].contains("2026-04-15T01:00:00Z"), "{w:?}");
    }

    #[test]
    fn gaps_and_the_coming_end_warn() {
        let c = config(&[
            ("a", "2026-01-01T00:00:00Z", "2026-05-01T00:00:00Z", false),
            ("b", "2026-05-02T00:00:00Z", "2026-05-10T00:00:00Z", false),
            ("c", "2026-04-01T00:00:00Z", "2026-12-01T00:00:00Z", true),
        ]);
        let w = schedule_warnings(&c, &[], at("2026-04-15T00:00:00Z"));
        assert_eq!(
            w,
            vec![
                "keys: no key signs from 2026-05-01T00:00:00Z to 2026-05-02T00:00:00Z".to_string(),
                "keys: no key is scheduled to sign after 2026-05-10T00:00:00Z; add the next key now"
                    .to_string(),
            ]
        );
        let w = schedule_warnings(&c, &[], at("2026-06-01T00:00:00Z"));
        assert_eq!(w, vec!["keys: no key signs now".to_string()]);
    }

    #[test]
    fn a_removed_key_whose_tokens_may_live_warns() {
        let c = config(&[("b", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z", false)]);
        let history = [
            published("a", "2025-12-01T00:00:00Z", "2026-04-15T00:10:00Z"),
            published("b", "2025-12-01T00:00:00Z", "2027-01-01T00:10:00Z"),
        ];
        let w = schedule_warnings(&c, &history, at("2026-04-15T00:00:00Z"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("keys a: removed from the config"), "{w:?}");
        assert!(schedule_warnings(&c, &history, at("2026-04-15T00:10:00Z")).is_empty());
    }
}
