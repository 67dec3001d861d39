//! The models a client may ask for (`upstream.models`), each with the name sent upstream.

use std::sync::Arc;

use crate::config::{ModelEntry, UpstreamConfig};

/// A model a request runs on: the name its client knows and the name the upstream is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoute {
    pub name: Arc<str>,
    pub upstream: Arc<str>,
}

/// The configured models, in their configured order; the first is the default.
#[derive(Debug, Clone)]
pub struct ModelCatalog {
    routes: Vec<ModelRoute>,
    /// When the catalog was made (Unix seconds): the `created` of every model listed.
    created: i64,
}

impl ModelCatalog {
    /// `upstream.models`, or `[upstream.model]` when it is empty. With the demo model the
    /// single default is named `demo`, as the demo model answers.
    pub fn new(config: &UpstreamConfig) -> Self {
        let default_name = if config.is_demo() {
            "demo"
        } else {
            config.model.as_str()
        };
        let routes = if config.models.is_empty() {
            vec![route(default_name, &config.model)]
        } else {
            config
                .models
                .iter()
                .map(|entry: &ModelEntry| route(entry.name(), entry.upstream()))
                .collect()
        };
        Self {
            routes,
            created: chrono::Utc::now().timestamp(),
        }
    }

    pub fn created(&self) -> i64 {
        self.created
    }

    /// The model of requests that name none.
    pub fn default_route(&self) -> &ModelRoute {
        &self.routes[0]
    }

    /// The model called `name`, if it is configured.
    pub fn find(&self, name: &str) -> Option<&ModelRoute> {
        self.routes.iter().find(|r| &*r.name == name)
    }

    pub fn routes(&self) -> &[ModelRoute] {
        &self.routes
    }
}

fn route(name: &str, upstream: &str) -> ModelRoute {
    ModelRoute {
        name: name.into(),
        upstream: upstream.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MappedModel;

    #[test]
    fn empty_list_means_the_upstream_model_and_entries_may_map() {
        let mut config = UpstreamConfig {
            base_url: "http://127.0.0.1:9/v1".into(),
            model: "gpt-4o-mini".into(),
            ..UpstreamConfig::default()
        };
        let catalog = ModelCatalog::new(&config);
        assert_eq!(&*catalog.default_route().name, "gpt-4o-mini");
        assert_eq!(catalog.routes().len(), 1);

        config.models = vec![
            ModelEntry::Name("fast".into()),
            ModelEntry::Mapped(MappedModel {
                name: "smart".into(),
                upstream: "qwen-max".into(),
            }),
        ];
        let catalog = ModelCatalog::new(&config);
        assert_eq!(&*catalog.default_route().upstream, "fast");
        let smart = catalog.find("smart").expect("configured");
        assert_eq!(&*smart.upstream, "qwen-max");
        assert!(catalog.find("gpt-4o-mini").is_none());
    }

    #[test]
    fn the_demo_model_is_called_demo() {
        let catalog = ModelCatalog::new(&UpstreamConfig::default());
        assert_eq!(&*catalog.default_route().name, "demo");
    }
}
