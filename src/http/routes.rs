//! The one route table: every area's `configure` adds its endpoints here, which registers them
//! with actix and, at the same time, lists them (method + path), so the OpenAPI document can
//! be checked against exactly what the server serves.

use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, Resource, Responder};

/// One path and the methods it answers (one actix resource, so a wrong method is a 405).
pub struct Endpoint {
    path: String,
    resource: Resource,
    methods: Vec<Method>,
}

/// Start an endpoint at `path` (actix pattern syntax: `/api/v1/tasks/{task_id}`).
pub fn at(path: impl Into<String>) -> Endpoint {
    let path = path.into();
    Endpoint {
        resource: web::resource(path.clone()),
        path,
        methods: Vec::new(),
    }
}

impl Endpoint {
    pub fn method<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self.resource.route(web::method(method.clone()).to(handler));
        self.methods.push(method);
        self
    }

    pub fn get<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.method(Method::GET, handler)
    }

    pub fn post<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.method(Method::POST, handler)
    }

    pub fn put<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.method(Method::PUT, handler)
    }

    pub fn patch<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.method(Method::PATCH, handler)
    }

    pub fn delete<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.method(Method::DELETE, handler)
    }
}

/// Where endpoints go: into an actix `ServiceConfig` (serving) or only into the list.
pub struct Routes<'a> {
    config: Option<&'a mut web::ServiceConfig>,
    listed: Vec<(Method, String)>,
}

impl<'a> Routes<'a> {
    /// Register with actix (and list).
    pub fn serving(config: &'a mut web::ServiceConfig) -> Self {
        Routes {
            config: Some(config),
            listed: Vec::new(),
        }
    }

    /// Only list (for the OpenAPI check).
    pub fn listing() -> Routes<'static> {
        Routes {
            config: None,
            listed: Vec::new(),
        }
    }

    pub fn add(&mut self, endpoint: Endpoint) -> &mut Self {
        for m in &endpoint.methods {
            self.listed.push((m.clone(), endpoint.path.clone()));
        }
        if let Some(config) = self.config.as_deref_mut() {
            let label = super::route_label::RouteLabel::new(&endpoint.path);
            config.service(endpoint.resource.app_data(label));
        }
        self
    }

    /// Every (method, path) added so far, in registration order.
    pub fn listed(&self) -> &[(Method, String)] {
        &self.listed
    }
}
