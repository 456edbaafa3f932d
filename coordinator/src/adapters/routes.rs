//! A router that keeps a table of what it routes, so the OpenAPI document
//! ([`super::openapi`]) can be checked against the routes actually served:
//! every route is registered through [`Routes::add`], which adds it to the
//! axum router and to the table in one call.

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};

/// The HTTP methods the API routes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verb {
    /// GET
    Get,
    /// POST
    Post,
}

impl Verb {
    /// Its name in an OpenAPI path item (`get`, `post`).
    pub fn openapi_name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
        }
    }
}

/// An axum router being built and the (method, path) pairs it routes.
pub struct Routes<S> {
    router: Router<S>,
    table: Vec<(Verb, &'static str)>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// Routes `verb path` to `handler` (several verbs on one path merge).
    pub fn add<H, T>(mut self, verb: Verb, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.router = self.router.route(path, on(verb.filter(), handler));
        self.table.push((verb, path));
        self
    }

    /// What is routed.
    pub fn table(&self) -> &[(Verb, &'static str)] {
        &self.table
    }

    /// The router.
    pub fn into_router(self) -> Router<S> {
        self.router
    }
}
