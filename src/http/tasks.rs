//! Routes of the tasks API.

use actix_web::web;

pub fn configure(_cfg: &mut web::ServiceConfig) {}
