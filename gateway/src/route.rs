//! Matching a request to a route.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, Route};

/// The routes of a configuration, by exact path.
#[derive(Debug, Default)]
pub struct Router {
    by_path: HashMap<String, Arc<Route>>,
}

impl Router {
    pub fn new(config: &Config) -> Router {
        let by_path = config
            .routes
            .iter()
            .map(|r| (r.path.clone(), Arc::new(r.clone())))
            .collect();
        Router { by_path }
    }

    /// The route for a request path (query already removed).
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.by_path.get(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_paths_only() {
        let config = Config::embedded().unwrap();
        let router = Router::new(&config);
        assert!(router.find("/ws/echo").is_some());
        assert!(router.find("/").is_some());
        assert!(router.find("/ws/echo/").is_none());
        assert!(router.find("/ws").is_none());
    }
}
