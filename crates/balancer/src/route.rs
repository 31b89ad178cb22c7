//! Routes: per-path stickiness and session-lost policy.
//!
//! The waiter's API has paths where a session matters (`/v1/orders/...`) and paths where
//! it does not (`/v1/menu`); routes let the operator say so. Each route resolves its
//! `auto` settings from the mode of the backend at hand: a stateful (or not yet known)
//! backend's diners are pinned and lose their session when it goes (`strict`), a
//! stateless backend's diners may move freely (`redispatch`).

use crate::config::{LostPolicy, RouteConfig, Stickiness};
use crate::spec::Mode;

/// What happens to a diner whose pinned backend is gone, once `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    Strict,
    Redispatch,
}

/// One route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    prefix: String,
    sticky: Stickiness,
    lost: LostPolicy,
}

impl Route {
    /// Whether affinity cookies are read (and may be issued) on this route.
    pub(crate) fn is_sticky(&self) -> bool {
        self.sticky != Stickiness::Off
    }

    /// Whether a response from a backend in `mode` pins the diner to it.
    pub(crate) fn pins(&self, mode: Option<Mode>) -> bool {
        match self.sticky {
            Stickiness::On => true,
            Stickiness::Off => false,
            Stickiness::Auto => mode != Some(Mode::Stateless),
        }
    }

    /// The policy when a pinned backend in `mode` is gone.
    pub(crate) fn on_lost(&self, mode: Option<Mode>) -> Policy {
        match self.lost {
            LostPolicy::Strict => Policy::Strict,
            LostPolicy::Redispatch => Policy::Redispatch,
            LostPolicy::Auto if mode == Some(Mode::Stateless) => Policy::Redispatch,
            LostPolicy::Auto => Policy::Strict,
        }
    }

    fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            None => false,
            Some(rest) => rest.is_empty() || self.prefix.ends_with('/') || rest.starts_with('/'),
        }
    }
}

/// All routes, longest prefix first, ending with the catch-all.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    pub(crate) fn new(config: &[RouteConfig]) -> Routes {
        let mut routes: Vec<Route> = config
            .iter()
            .map(|r| Route {
                prefix: r.prefix.clone(),
                sticky: r.sticky,
                lost: r.on_session_lost,
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        if !routes.iter().any(|r| r.prefix == "/") {
            routes.push(Route {
                prefix: "/".into(),
                sticky: Stickiness::Auto,
                lost: LostPolicy::Auto,
            });
        }
        Routes { routes }
    }

    /// The route for `path` (the catch-all `/` always matches).
    pub(crate) fn find(&self, path: &str) -> &Route {
        self.routes
            .iter()
            .find(|r| r.matches(path))
            .unwrap_or_else(|| &self.routes[self.routes.len() - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        Routes::new(&[
            RouteConfig {
                prefix: "/v1/menu".into(),
                sticky: Stickiness::Off,
                on_session_lost: LostPolicy::Auto,
            },
            RouteConfig {
                prefix: "/v1".into(),
                sticky: Stickiness::Auto,
                on_session_lost: LostPolicy::Redispatch,
            },
        ])
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let r = routes();
        assert!(!r.find("/v1/menu").is_sticky());
        assert!(!r.find("/v1/menu/3").is_sticky());
        assert!(
            r.find("/v1/menus").is_sticky(),
            "/v1/menus is under /v1, not /v1/menu"
        );
        assert_eq!(r.find("/v1/orders").on_lost(None), Policy::Redispatch);
        assert_eq!(
            r.find("/v10").on_lost(None),
            Policy::Strict,
            "falls to the catch-all"
        );
        assert_eq!(r.find("/").on_lost(None), Policy::Strict);
    }

    #[test]
    fn auto_follows_the_backend_mode() {
        let r = routes();
        let any = r.find("/other");
        assert!(any.pins(Some(Mode::Stateful)));
        assert!(any.pins(None), "unknown mode is treated as stateful");
        assert!(!any.pins(Some(Mode::Stateless)));
        assert_eq!(any.on_lost(Some(Mode::Stateful)), Policy::Strict);
        assert_eq!(any.on_lost(Some(Mode::Stateless)), Policy::Redispatch);
    }
}
