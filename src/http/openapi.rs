//! The OpenAPI 3.1 document of the routes Longship serves (`GET /openapi.json`, no key needed),
//! built with utoipa from the request types the handlers decode (`ToSchema` bodies,
//! `IntoParams` queries). Each operation is listed here once; a test checks the list against
//! every route `http::configure` registers, so a new route cannot be left out.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr,
    Required, ResponseBuilder, SecurityRequirement,
};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::storage::sessions::commit::CommitSessionBody;
use crate::storage::sessions::message::{AddMessageBody, MessageBatchBody};

use super::routes::{at, Routes};
use super::{
    acl, admin, console, content, diagnostics, fs, pack, resources, search, sessions, skills,
    snapshot, stats, system, tags, tasks, user_settings, watches, webdav,
};

pub const ROUTE: &str = "/openapi.json";

pub fn configure(routes: &mut Routes) {
    routes.add(at(ROUTE).get(serve));
}

async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document_json().clone())
}

/// The document, serialized once per process.
pub fn document_json() -> &'static String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        // Serializing a tree of plain maps and strings cannot fail; an empty object would
        // still be valid JSON for a client.
        serde_json::to_string(&document()).unwrap_or_else(|_| "{}".into())
    })
}

/// Who may call an operation (the `Caller<Rule>` of its handler).
#[derive(Clone, Copy)]
enum Auth {
    /// No key needed.
    Open,
    /// Any key (or none in dev mode).
    AnyRole,
    /// A user or admin key; the root key is refused in api_key mode.
    Data,
    /// The root key, api_key mode only.
    Root,
    /// The root key or the account's admin key, api_key mode only.
    RootOrAdmin,
    /// Any key (root, admin or user); api_key mode only.
    AnyKey,
}

impl Auth {
    fn describe(self) -> &'static str {
        match self {
            Auth::Open => "No key needed.",
            Auth::AnyRole => "Any valid key (none in dev mode).",
            Auth::Data => {
                "A user or admin key of the account (none in dev mode); the root key is \
                 refused with 403 in api_key mode."
            }
            Auth::Root => "The root key; api_key mode only (403 in dev mode).",
            Auth::RootOrAdmin => {
                "The root key, or an admin key of the account in the path; api_key mode only."
            }
            Auth::AnyKey => "Any key (root, admin or user); api_key mode only (403 in dev mode).",
        }
    }
}

type Schemas = Vec<(String, RefOr<Schema>)>;

/// What an operation reads from the request body.
enum Body {
    None,
    /// A JSON object of this type (adds its schemas, returns its name); `required: false` =
    /// an empty body means the defaults.
    Json(fn(&mut Schemas) -> String, bool),
    /// A JSON object still decoded field by field (described in docs/API.md, not typed here).
    Untyped(&'static str, bool),
    /// `multipart/form-data` with one `file` part.
    Multipart,
    /// Raw bytes (WebDAV PUT).
    Octets,
}

struct Operation {
    method: HttpMethod,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    auth: Auth,
    body: Body,
    query: fn() -> Vec<Parameter>,
}

fn no_query() -> Vec<Parameter> {
    Vec::new()
}

fn query_of<T: IntoParams>() -> Vec<Parameter> {
    T::into_params(|| Some(ParameterIn::Query))
}

fn json_of<T: ToSchema>(out: &mut Schemas) -> String {
    let name = T::name().into_owned();
    out.push((name.clone(), T::schema()));
    T::schemas(out);
    name
}

fn operations() -> Vec<Operation> {
    use Auth::*;
    use HttpMethod::{Delete, Get, Head, Options, Patch, Post, Put};
    let op = |method, path, tag, summary, auth, body, query| Operation {
        method,
        path,
        tag,
        summary,
        auth,
        body,
        query,
    };
    vec![
        // system
        op(Get, "/health", "system", "Liveness; names the caller when a valid key is sent", Open, Body::None, no_query),
        op(Get, "/ready", "system", "Readiness: a fresh storage probe (503 when not ready)", Open, Body::None, no_query),
        op(Get, ROUTE, "system", "This document", Open, Body::None, no_query),
        op(Get, "/metrics", "system", "Prometheus metrics (text format)", Open, Body::None, no_query),
        op(Get, "/api/v1/system/status", "system", "Server status and the caller's identity", AnyRole, Body::None, no_query),
        op(Get, "/api/v1/observer/system", "system", "Component health in the observer shape `ov status` reads", AnyRole, Body::None, query_of::<system::ObserverQuery>),
        op(Get, "/api/v1/observer/queue", "system", "Observer component: pools and the ingestion, extraction and embedding backlogs", AnyRole, Body::None, query_of::<system::ObserverQuery>),
        op(Get, "/api/v1/observer/vikingdb", "system", "Observer component: the index (documents, segments, lag, stored vectors)", AnyRole, Body::None, query_of::<system::ObserverQuery>),
        op(Get, "/api/v1/observer/models", "system", "Observer component: configured models and their health (keys masked)", AnyRole, Body::None, query_of::<system::ObserverQuery>),
        op(Get, "/api/v1/observer/lock", "system", "Observer component: held, waiting and timed-out named locks", AnyRole, Body::None, query_of::<system::ObserverQuery>),
        op(Get, "/api/v1/observer/retrieval", "system", "Observer component: query counts and latencies", AnyRole, Body::None, query_of::<system::ObserverQuery>),
        op(Get, "/api/v1/observer/filesystem", "system", "Observer component: storage backend health and operation counts", AnyRole, Body::None, query_of::<system::ObserverQuery>),
        op(Post, "/api/v1/system/consistency", "system", "Check that the index, stored vectors and summaries agree with storage for a subtree", Data, Body::Json(json_of::<diagnostics::ConsistencyBody>, true), no_query),
        op(Get, "/api/v1/debug/health", "system", "Account-scoped health", AnyRole, Body::None, no_query),
        op(Get, "/api/v1/debug/vector/scroll", "system", "Page through the account's index records (503 NO_VECTOR_DB without an embedding model)", AnyRole, Body::None, query_of::<diagnostics::ScrollQuery>),
        op(Get, "/api/v1/debug/vector/count", "system", "Count the account's index records (503 NO_VECTOR_DB without an embedding model)", AnyRole, Body::None, query_of::<diagnostics::CountQuery>),
        op(Post, "/api/v1/system/wait", "system", "Wait until the account's ingestions and this instance's index have caught up", AnyRole, Body::Json(json_of::<resources::WaitBody>, false), no_query),
        // admin
        op(Post, "/api/v1/admin/accounts", "admin", "Create an account and its first admin; returns the admin's key", Root, Body::Json(json_of::<admin::CreateAccountBody>, true), no_query),
        op(Get, "/api/v1/admin/accounts", "admin", "List accounts", Root, Body::None, query_of::<admin::ListQuery>),
        op(Get, "/api/v1/admin/accounts/{account_id}", "admin", "One account", Root, Body::None, no_query),
        op(Delete, "/api/v1/admin/accounts/{account_id}", "admin", "Delete an account, its users and its data", Root, Body::None, no_query),
        op(Post, "/api/v1/admin/accounts/{account_id}/users", "admin", "Register a user; returns the user's key", RootOrAdmin, Body::Json(json_of::<admin::users::RegisterBody>, true), no_query),
        op(Get, "/api/v1/admin/accounts/{account_id}/users", "admin", "List the account's users", RootOrAdmin, Body::None, query_of::<admin::users::ListUsersQuery>),
        op(Get, "/api/v1/admin/accounts/{account_id}/users/{user_id}", "admin", "One user", RootOrAdmin, Body::None, no_query),
        op(Delete, "/api/v1/admin/accounts/{account_id}/users/{user_id}", "admin", "Remove a user and revoke their key", RootOrAdmin, Body::None, no_query),
        op(Put, "/api/v1/admin/accounts/{account_id}/users/{user_id}/role", "admin", "Promote a user to admin", RootOrAdmin, Body::Json(json_of::<admin::users::RoleBody>, true), no_query),
        op(Post, "/api/v1/admin/accounts/{account_id}/users/{user_id}/key", "admin", "Issue a new key for a user (the old one stops working)", RootOrAdmin, Body::Json(json_of::<admin::users::KeyBody>, false), no_query),
        // account groups (issue #23)
        op(Post, "/api/v1/admin/accounts/{account_id}/groups", "admin", "Create a group of users (ACL principal group:<id>)", RootOrAdmin, Body::Json(json_of::<admin::groups::CreateGroupBody>, true), no_query),
        op(Get, "/api/v1/admin/accounts/{account_id}/groups", "admin", "List the account's groups with their member counts", RootOrAdmin, Body::None, no_query),
        op(Delete, "/api/v1/admin/accounts/{account_id}/groups/{group_id}", "admin", "Delete a group", RootOrAdmin, Body::None, no_query),
        op(Get, "/api/v1/admin/accounts/{account_id}/groups/{group_id}/members", "admin", "A group's members", RootOrAdmin, Body::None, no_query),
        op(Put, "/api/v1/admin/accounts/{account_id}/groups/{group_id}/members/{user_id}", "admin", "Add a user of the account to a group", RootOrAdmin, Body::None, no_query),
        op(Delete, "/api/v1/admin/accounts/{account_id}/groups/{group_id}/members/{user_id}", "admin", "Remove a user from a group", RootOrAdmin, Body::None, no_query),
        // ACLs (issue #23)
        op(Get, "/api/v1/acl", "acl", "A viking://resources node's ACL: mode, direct, inherited and effective entries (manage needed)", Data, Body::None, query_of::<acl::AclQuery>),
        op(Put, "/api/v1/acl", "acl", "Set a node's entries and/or acl_mode (inherit | restricted)", Data, Body::Json(json_of::<acl::SetAclBody>, true), no_query),
        op(Delete, "/api/v1/acl", "acl", "Drop a node's own ACL (back to plain inheritance)", Data, Body::None, query_of::<acl::AclQuery>),
        op(Post, "/api/v1/acl/grant", "acl", "Grant a principal (user:<id>, user:*, group:<id>) a level (read < write < manage)", Data, Body::Json(json_of::<acl::GrantBody>, true), no_query),
        op(Post, "/api/v1/acl/revoke", "acl", "Revoke a principal's direct grant", Data, Body::Json(json_of::<acl::RevokeBody>, true), no_query),
        op(Get, "/api/v1/admin/accounts/{account_id}/memory-templates", "admin", "The account's editable memory templates: defaults and effective", RootOrAdmin, Body::None, no_query),
        op(Get, "/api/v1/admin/accounts/{account_id}/memory-templates/{memory_type}", "admin", "One memory template: defaults and effective", RootOrAdmin, Body::None, no_query),
        op(Put, "/api/v1/admin/accounts/{account_id}/memory-templates/{memory_type}", "admin", "Edit a memory template's description, field descriptions (and events' content template)", RootOrAdmin, Body::Untyped("description, content_template, fields: [{name, description}]", true), no_query),
        op(Delete, "/api/v1/admin/accounts/{account_id}/memory-templates/{memory_type}", "admin", "Go back to the default memory template", RootOrAdmin, Body::None, no_query),
        op(Get, "/api/v1/admin/accounts/{account_id}/configuration", "admin", "The account's explicit settings (acl, audit, memory; model sections ROOT only)", RootOrAdmin, Body::None, no_query),
        op(Patch, "/api/v1/admin/accounts/{account_id}/configuration", "admin", "Three-state PATCH of the account's settings (null removes); every instance within auth.refresh_interval_ms", RootOrAdmin, Body::Json(json_of::<admin::settings::ConfigPatchBody>, true), no_query),
        op(Get, "/api/v1/admin/accounts/{account_id}/settings", "admin", "Deprecated: the ACL and agent-evolution switches", RootOrAdmin, Body::None, no_query),
        op(Patch, "/api/v1/admin/accounts/{account_id}/settings", "admin", "Deprecated: set the ACL switch", RootOrAdmin, Body::Json(json_of::<admin::settings::LegacySettingsBody>, true), no_query),
        op(Get, "/api/v1/admin/configuration", "admin", "The cluster's settings (model keys masked; source=file: 501)", Root, Body::None, no_query),
        op(Patch, "/api/v1/admin/configuration", "admin", "Cluster settings cannot change at runtime: 501 with the reason (an empty patch answers the settings)", Root, Body::Json(json_of::<admin::settings::ConfigPatchBody>, false), no_query),
        op(Post, "/api/v1/admin/migrate", "admin", "Legacy data migration: 501 (Longship has only the current layout)", Root, Body::Json(json_of::<admin::cluster::MigrateBody>, false), no_query),
        op(Get, "/api/v1/admin/accounts/{account_id}/users/{user_id}/settings", "admin", "The user's memory policy (all known memory types when it names none)", RootOrAdmin, Body::None, no_query),
        op(Patch, "/api/v1/admin/accounts/{account_id}/users/{user_id}/settings", "admin", "Set (or clear with null) the user's memory policy", RootOrAdmin, Body::Json(json_of::<admin::settings::UserSettingsBody>, true), no_query),
        op(Get, "/api/v1/user-settings/add-locations", "user-settings", "The caller's add locations: override and effective", Data, Body::None, no_query),
        op(Patch, "/api/v1/user-settings/add-locations", "user-settings", "Set (or clear with null) the caller's default add_resource / add_skill targets", Data, Body::Json(json_of::<user_settings::AddLocationsBody>, true), no_query),
        op(Delete, "/api/v1/user-settings/add-locations", "user-settings", "Clear the caller's add locations", Data, Body::None, no_query),
        op(Get, "/api/v1/console/audit", "console", "Audit log of mutations (ROOT: all; ADMIN: the account; USER: own)", AnyRole, Body::None, query_of::<console::AuditParams>),
        op(Get, "/api/v1/console/context-commits", "console", "Content-adding requests per hour bucket", AnyRole, Body::None, query_of::<console::DateRangeParams>),
        op(Get, "/api/v1/console/tokens", "console", "Model tokens per day, and per account, user and model", AnyRole, Body::None, query_of::<console::DateRangeParams>),
        op(Get, "/api/v1/console/dashboard/summary", "console", "Content counts, today's tokens and retrievals", AnyRole, Body::None, no_query),
        // fs
        op(Get, "/api/v1/fs/ls", "fs", "List a directory", Data, Body::None, query_of::<fs::ListQuery>),
        op(Get, "/api/v1/fs/tree", "fs", "List a directory tree", Data, Body::None, query_of::<fs::ListQuery>),
        op(Get, "/api/v1/fs/stat", "fs", "One entry's metadata", Data, Body::None, query_of::<fs::UriQuery>),
        op(Post, "/api/v1/fs/mkdir", "fs", "Create a directory (and its parents)", Data, Body::Json(json_of::<fs::MkdirBody>, true), no_query),
        op(Post, "/api/v1/fs/mv", "fs", "Move a file or directory; an existing target is 409", Data, Body::Json(json_of::<fs::MvBody>, true), no_query),
        op(Post, "/api/v1/fs/cp", "fs", "Copy a file or (recursive) a directory; an existing target is 409", Data, Body::Json(json_of::<fs::CpBody>, true), no_query),
        op(Delete, "/api/v1/fs", "fs", "Remove a file or (recursive) a directory", Data, Body::None, query_of::<fs::RmQuery>),
        // content
        op(Get, "/api/v1/content/read", "content", "Read a file's lines", Data, Body::None, query_of::<content::ReadQuery>),
        op(Get, "/api/v1/content/abstract", "content", "A directory's level-0 summary (.abstract.md)", Data, Body::None, query_of::<content::UriQuery>),
        op(Get, "/api/v1/content/overview", "content", "A directory's level-1 summary (.overview.md)", Data, Body::None, query_of::<content::UriQuery>),
        op(Get, "/api/v1/content/download", "content", "A file's raw bytes (application/octet-stream)", Data, Body::None, query_of::<content::UriQuery>),
        op(Post, "/api/v1/content/write", "content", "Write (replace, append or create) a file", Data, Body::Json(json_of::<content::WriteBody>, true), no_query),
        op(Post, "/api/v1/content/batch-write", "content", "Write several files under one directory (per-operation expected_sha256, skip_conflicts)", Data, Body::Json(json_of::<content::BatchWriteBody>, true), no_query),
        op(Post, "/api/v1/content/reindex", "content", "Rebuild a subtree's index entries and vectors (wait=false: a task)", Data, Body::Json(json_of::<content::ReindexBody>, true), no_query),
        // pack (.ovpack, 0.5.2's format)
        op(Post, "/api/v1/pack/export", "pack", "Export a subtree as a .ovpack ZIP (streamed as it is read)", AnyKey, Body::Json(json_of::<pack::ExportBody>, true), no_query),
        op(Post, "/api/v1/pack/backup", "pack", "Back up the account's resources and user scopes (and, a Longship extension, agent skills) as a .ovpack ZIP", RootOrAdmin, Body::Json(json_of::<pack::BackupBody>, false), no_query),
        op(Post, "/api/v1/pack/import", "pack", "Import an uploaded .ovpack under a parent URI (atomic; answers the root's uri)", AnyKey, Body::Json(json_of::<pack::ImportBody>, true), no_query),
        op(Post, "/api/v1/pack/restore", "pack", "Restore an uploaded backup .ovpack to its scope roots (atomic per root)", RootOrAdmin, Body::Json(json_of::<pack::RestoreBody>, true), no_query),
        // tags
        op(Post, "/api/v1/content/set_tags", "content", "Set a node's k=v tags (replace, append or clear; recursive for a tree)", Data, Body::Json(json_of::<tags::SetTagsBody>, true), no_query),
        op(Post, "/api/v1/fs/attrs/set_tags", "fs", "Same as /content/set_tags", Data, Body::Json(json_of::<tags::SetTagsBody>, true), no_query),
        op(Get, "/api/v1/fs/attrs", "fs", "A node's logical attributes (its tags)", Data, Body::None, query_of::<tags::AttrsQuery>),
        // search
        op(Post, "/api/v1/search/grep", "search", "Regular-expression search in file contents", Data, Body::Json(json_of::<search::GrepBody>, true), no_query),
        op(Post, "/api/v1/search/glob", "search", "Find paths by glob pattern", Data, Body::Json(json_of::<search::GlobBody>, true), no_query),
        op(Post, "/api/v1/search/find", "search", "Ranked retrieval (keyword, plus vectors when an embedder is configured)", Data, Body::Json(json_of::<crate::search::request::FindBody>, true), no_query),
        op(Post, "/api/v1/search/search", "search", "find with session context and search_type", Data, Body::Json(json_of::<crate::search::request::SearchBody>, true), no_query),
        op(Post, "/api/v1/search/recall", "search", "Deprecated upstream; answers 501", Data, Body::None, no_query),
        // sessions
        op(Post, "/api/v1/sessions", "sessions", "Create a session", Data, Body::Json(json_of::<sessions::CreateSessionBody>, false), no_query),
        op(Get, "/api/v1/sessions", "sessions", "List the caller's sessions", Data, Body::None, no_query),
        op(Get, "/api/v1/sessions/{sid}", "sessions", "One session (auto_create makes a missing one)", Data, Body::None, query_of::<sessions::GetQuery>),
        op(Delete, "/api/v1/sessions/{sid}", "sessions", "Delete a session and its archives", Data, Body::None, no_query),
        op(Post, "/api/v1/sessions/{sid}/messages", "sessions", "Append one message", Data, Body::Json(json_of::<AddMessageBody>, true), no_query),
        op(Post, "/api/v1/sessions/{sid}/messages/batch", "sessions", "Append several messages at once", Data, Body::Json(json_of::<MessageBatchBody>, true), no_query),
        op(Post, "/api/v1/sessions/{sid}/commit", "sessions", "Archive the live messages (commit pool)", Data, Body::Json(json_of::<CommitSessionBody>, false), no_query),
        op(Get, "/api/v1/sessions/{sid}/archives/{archive_id}", "sessions", "One archive's messages and summary", Data, Body::None, no_query),
        op(Get, "/api/v1/sessions/{sid}/context", "sessions", "Archive summaries and live messages within a token budget", Data, Body::None, query_of::<sessions::ContextQuery>),
        op(Patch, "/api/v1/sessions/{sid}/config", "sessions", "Change a session's event tags and auto-commit policy", Data, Body::Json(json_of::<sessions::UpdateConfigBody>, false), no_query),
        op(Get, "/api/v1/sessions/{sid}/tool-results", "sessions", "Not implemented (501): tool outputs stay inline in messages", Data, Body::None, no_query),
        op(Get, "/api/v1/sessions/{sid}/tool-results/{tool_result_id}", "sessions", "Not implemented (501): tool outputs stay inline in messages", Data, Body::None, no_query),
        op(Get, "/api/v1/sessions/{sid}/tool-results/{tool_result_id}/search", "sessions", "Not implemented (501): tool outputs stay inline in messages", Data, Body::None, no_query),
        op(Get, "/api/v1/stats/memories", "stats", "The caller's memories by category, with hotness and staleness", Data, Body::None, query_of::<stats::MemoriesQuery>),
        op(Get, "/api/v1/stats/sessions/{session_id}", "stats", "One session's turns and memories extracted", Data, Body::None, no_query),
        // watches
        op(Get, "/api/v1/watches", "watches", "List the caller's watches, or the one watching ?to_uri=", Data, Body::None, query_of::<watches::ListQuery>),
        op(Patch, "/api/v1/watches", "watches", "Update the watch of ?to_uri=", Data, Body::Json(json_of::<watches::UpdateWatchBody>, true), query_of::<watches::KeyQuery>),
        op(Delete, "/api/v1/watches", "watches", "Delete the watch of ?to_uri=", Data, Body::None, query_of::<watches::KeyQuery>),
        op(Post, "/api/v1/watches/trigger", "watches", "Run the watch of ?to_uri= now (answers at once)", Data, Body::None, query_of::<watches::KeyQuery>),
        op(Get, "/api/v1/watches/{task_id}", "watches", "One watch (?to_uri= must agree)", Data, Body::None, query_of::<watches::KeyQuery>),
        op(Patch, "/api/v1/watches/{task_id}", "watches", "Update a watch: interval (minutes), active, reason, instruction", Data, Body::Json(json_of::<watches::UpdateWatchBody>, true), query_of::<watches::KeyQuery>),
        op(Delete, "/api/v1/watches/{task_id}", "watches", "Delete a watch", Data, Body::None, query_of::<watches::KeyQuery>),
        op(Post, "/api/v1/watches/{task_id}/trigger", "watches", "Run a watch now (answers at once)", Data, Body::None, query_of::<watches::KeyQuery>),
        // tasks
        op(Get, "/api/v1/tasks", "tasks", "List the caller's tasks", AnyRole, Body::None, query_of::<tasks::ListQuery>),
        op(Get, "/api/v1/tasks/{task_id}", "tasks", "One task", AnyRole, Body::None, no_query),
        op(Post, "/api/v1/tasks/{task_id}/cancel", "tasks", "Cancel a pending or running task", AnyRole, Body::None, no_query),
        // resources
        op(Post, "/api/v1/resources/temp_upload", "resources", "Upload a file for a later add_resource (multipart, streamed)", Data, Body::Multipart, no_query),
        op(Post, "/api/v1/resources", "resources", "Ingest a resource (upload, URL or allowed server path) with L0/L1 summaries", Data, Body::Json(json_of::<resources::AddResourceBody>, true), no_query),
        // skills
        op(Post, "/api/v1/skills", "skills", "Install skills from SKILL.md text, a structured skill or an upload (SKILL.md or ZIP)", Data, Body::Json(json_of::<skills::AddSkillBody>, true), no_query),
        op(Get, "/api/v1/skills", "skills", "List the caller's and the account's skills", Data, Body::None, query_of::<skills::ListSkillsQuery>),
        op(Post, "/api/v1/skills/find", "skills", "Find skills by a query on their descriptions and instructions", Data, Body::Json(json_of::<skills::FindSkillsBody>, true), no_query),
        op(Post, "/api/v1/skills/validate", "skills", "Validate a SKILL.md against the Agent Skills rules (always a verdict)", AnyRole, Body::Json(json_of::<skills::ValidateSkillBody>, true), no_query),
        op(Get, "/api/v1/skills/{skill_name}", "skills", "One installed skill: abstract, overview, SKILL.md, files", Data, Body::None, query_of::<skills::ShowSkillQuery>),
        op(Put, "/api/v1/skills/{skill_name}", "skills", "Replace an installed skill (same name)", Data, Body::Json(json_of::<skills::UpdateSkillBody>, true), no_query),
        op(Delete, "/api/v1/skills/{skill_name}", "skills", "Remove an installed skill", Data, Body::None, query_of::<skills::TargetQuery>),
        // snapshots (issue #22)
        op(Post, "/api/v1/snapshot/commit", "snapshot", "Record the live state of paths (ROOT: the account) as a new version on a branch", Data, Body::Json(json_of::<snapshot::CommitBody>, true), no_query),
        op(Get, "/api/v1/snapshot/log", "snapshot", "A branch's versions, newest first (optionally only those changing some paths)", Data, Body::None, query_of::<snapshot::LogQuery>),
        op(Get, "/api/v1/snapshot/versions", "snapshot", "Compile output versions: 501, Compile is out of scope", Data, Body::None, no_query),
        op(Post, "/api/v1/snapshot/restore", "snapshot", "Bring a directory back to a version as a forward commit (dry_run: the plan); Compile mode 501", Data, Body::Json(json_of::<snapshot::RestoreBody>, true), no_query),
        op(Get, "/api/v1/snapshot/show", "snapshot", "A version's commit metadata, or one file's raw bytes at a version", Data, Body::None, query_of::<snapshot::ShowQuery>),
        op(Get, "/api/v1/snapshot/diff", "snapshot", "Unified diff of one file between two versions (size-limited)", Data, Body::None, query_of::<snapshot::DiffQuery>),
        op(Get, "/api/v1/snapshot/diff-paths", "snapshot", "Changed files under directories between two versions, paged", Data, Body::None, query_of::<snapshot::DiffPathsQuery>),
        op(Get, "/api/v1/snapshot/ignore", "snapshot", "The account's .ovgitignore rules (admins)", Data, Body::None, no_query),
        op(Put, "/api/v1/snapshot/ignore", "snapshot", "Replace the account's .ovgitignore rules (admins)", Data, Body::Json(json_of::<snapshot::SetIgnoreBody>, true), no_query),
        op(Delete, "/api/v1/snapshot/ignore", "snapshot", "Delete the account's .ovgitignore rules (admins)", Data, Body::None, no_query),
        // webdav (PROPFIND, MKCOL, COPY, MOVE: the path items' `x-webdav-methods`)
        op(Options, webdav::PREFIX, "webdav", "WebDAV methods and class (Allow, DAV headers)", Open, Body::None, no_query),
        op(Get, webdav::PREFIX, "webdav", "WebDAV: the resources root is a collection (405)", Data, Body::None, no_query),
        op(Head, webdav::PREFIX, "webdav", "WebDAV: the resources root is a collection (405)", Data, Body::None, no_query),
        op(Put, webdav::PREFIX, "webdav", "WebDAV: the resources root is a collection (405)", Data, Body::Octets, no_query),
        op(Delete, webdav::PREFIX, "webdav", "WebDAV: the resources root cannot be deleted (405)", Data, Body::None, no_query),
        op(Options, WEBDAV_TAIL, "webdav", "WebDAV methods and class (Allow, DAV headers)", Open, Body::None, no_query),
        op(Get, WEBDAV_TAIL, "webdav", "WebDAV: a file's bytes (a collection: 405)", Data, Body::None, no_query),
        op(Head, WEBDAV_TAIL, "webdav", "WebDAV: a file's length, type, ETag and modification time", Data, Body::None, no_query),
        op(Put, WEBDAV_TAIL, "webdav", "WebDAV: store any bytes byte-exact (201 created, 204 replaced; parent missing: 409)", Data, Body::Octets, no_query),
        op(Delete, WEBDAV_TAIL, "webdav", "WebDAV: remove a file or a whole collection (204)", Data, Body::None, no_query),
    ]
}

/// `{"status":"ok","result":…,"time":…}`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct OkEnvelope {
    /// Always `ok`.
    status: String,
    /// The operation's result (shapes in docs/API.md).
    result: Value,
    /// Seconds the server spent on the request.
    time: f64,
}

/// `{"status":"error","error":{code,message,details?},"time":…}`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct ErrorEnvelope {
    /// Always `error`.
    status: String,
    error: ErrorBody,
    time: f64,
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct ErrorBody {
    /// `INVALID_ARGUMENT`, `NOT_FOUND`, `PERMISSION_DENIED`, `UNAUTHENTICATED`, `CONFLICT`,
    /// `RESOURCE_EXHAUSTED`, `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, ...
    code: String,
    message: String,
    /// For validation errors: `validation_errors: [{loc, message, type}]`.
    details: Option<Value>,
}

/// Path parameters from the `{name}` segments of an actix pattern.
fn path_parameters(path: &str) -> Vec<Parameter> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(String::schema()))
                .build()
        })
        .collect()
}

fn json_body(required: bool, description: Option<String>, schema: RefOr<Schema>) -> RequestBody {
    RequestBodyBuilder::new()
        .required(Some(if required {
            Required::True
        } else {
            Required::False
        }))
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

fn envelope_response(description: &str, schema: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build(),
        )
        .build()
}

/// Build the whole document.
pub fn document() -> OpenApi {
    let mut schemas: Schemas = Vec::new();
    json_of::<OkEnvelope>(&mut schemas);
    json_of::<ErrorEnvelope>(&mut schemas);
    let mut paths = Paths::new();
    let mut tags: Vec<&str> = Vec::new();
    for op in operations() {
        if !tags.contains(&op.tag) {
            tags.push(op.tag);
        }
        let mut parameters = path_parameters(op.path);
        parameters.extend((op.query)());
        let mut builder = OperationBuilder::new()
            .tag(op.tag)
            .summary(Some(op.summary))
            .description(Some(format!("Auth: {}", op.auth.describe())))
            .operation_id(Some(operation_id(&op)))
            .parameters(Some(parameters))
            .response(
                "200",
                envelope_response("Success envelope (bare JSON for /health, /ready, /openapi.json; text for /metrics; bytes for download)", "OkEnvelope"),
            )
            .response(
                "default",
                envelope_response("Error envelope (4xx bad input or access; 503 + Retry-After when a pool or budget is full)", "ErrorEnvelope"),
            );
        builder = match op.body {
            Body::None => builder,
            Body::Json(add_schemas, required) => {
                let name = add_schemas(&mut schemas);
                builder.request_body(Some(json_body(
                    required,
                    None,
                    Ref::from_schema_name(name).into(),
                )))
            }
            Body::Untyped(fields, required) => builder.request_body(Some(json_body(
                required,
                Some(format!("A JSON object: {fields} (see docs/API.md)")),
                ObjectBuilder::new().into(),
            ))),
            Body::Octets => builder.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .description(Some("the file's bytes, stored as sent"))
                    .content("application/octet-stream", ContentBuilder::new().build())
                    .build(),
            )),
            Body::Multipart => builder.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .description(Some("multipart/form-data with one part named `file`"))
                    .content(
                        "multipart/form-data",
                        ContentBuilder::new()
                            .schema(Some(
                                ObjectBuilder::new()
                                    .property(
                                        "file",
                                        ObjectBuilder::new()
                                            .schema_type(utoipa::openapi::Type::String)
                                            .content_media_type("application/octet-stream"),
                                    )
                                    .required("file"),
                            ))
                            .build(),
                    )
                    .build(),
            )),
        };
        if !matches!(op.auth, Auth::Open) {
            builder = builder
                .security(SecurityRequirement::new("api_key", Vec::<String>::new()))
                .security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        paths.add_path_operation(op.path, vec![op.method], builder.build());
    }
    webdav_extension_methods(&mut paths);
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        )
        .security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Longship")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The OpenViking 0.5.2 HTTP API as Longship serves it. Human-readable \
                     reference: docs/API.md in the repository.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .tags(Some(
            tags.into_iter()
                .map(|t| TagBuilder::new().name(t).build())
                .collect::<Vec<_>>(),
        ))
        .build()
}

/// The OpenAPI form of the WebDAV tail route (`{path:.*}` in actix syntax).
const WEBDAV_TAIL: &str = "/webdav/resources/{path}";

/// OpenAPI 3.1 has no field for PROPFIND, MKCOL, COPY or MOVE: the WebDAV path items list them
/// (method → summary) in `x-webdav-methods`.
fn webdav_extension_methods(paths: &mut Paths) {
    let summaries = serde_json::json!({
        "PROPFIND": "Properties of a file or collection (Depth 0 or 1; infinity answered as 1; at most 10,000 children): 207 multistatus XML",
        "MKCOL": "Create a collection (201; exists: 405; parent missing: 409; a body: 415)",
        "COPY": "Copy to the Destination header's path (Depth 0: a collection without members; Overwrite as MOVE)",
        "MOVE": "Move to the Destination header's path (RFC 4918 Overwrite: T replaces, F answers 412)",
    });
    for path in [webdav::PREFIX, WEBDAV_TAIL] {
        if let Some(item) = paths.paths.get_mut(path) {
            let ext: utoipa::openapi::extensions::Extensions =
                [("x-webdav-methods".to_string(), summaries.clone())]
                    .into_iter()
                    .collect();
            item.extensions = Some(ext);
        }
    }
}

fn operation_id(op: &Operation) -> String {
    let method = match op.method {
        HttpMethod::Get => "get",
        HttpMethod::Post => "post",
        HttpMethod::Put => "put",
        HttpMethod::Delete => "delete",
        HttpMethod::Patch => "patch",
        HttpMethod::Head => "head",
        HttpMethod::Options => "options",
        _ => "other",
    };
    let path: String = op
        .path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{method}{}", path.trim_end_matches('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_route_is_documented_and_nothing_else() {
        let doc: Value = serde_json::from_str(document_json()).expect("the document is JSON");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            doc["openapi"]
        );
        let registered = crate::http::registered_routes();
        assert!(registered.len() > 40, "{registered:?}");
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "put", "delete", "patch", "head", "options"]
                    .contains(&method.as_str())
                {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
            if let Some(dav) = item["x-webdav-methods"].as_object() {
                for method in dav.keys() {
                    documented.push((method.clone(), path.clone()));
                }
            }
        }
        // actix's `{name:regex}` is OpenAPI's `{name}`.
        let registered: Vec<(actix_web::http::Method, String)> = registered
            .into_iter()
            .map(|(m, p)| (m, p.replace(":.*}", "}")))
            .collect();
        for (method, path) in &registered {
            assert!(
                documented.contains(&(method.as_str().to_string(), path.clone())),
                "{method} {path} is served but not in the OpenAPI document"
            );
        }
        for (method, path) in &documented {
            assert!(
                registered
                    .iter()
                    .any(|(m, p)| m.as_str() == method && p == path),
                "{method} {path} is documented but not served"
            );
        }
    }

    #[test]
    fn session_bodies_are_typed_schemas() {
        let doc: Value = serde_json::from_str(document_json()).expect("JSON");
        let schemas = &doc["components"]["schemas"];
        for name in [
            "CreateSessionBody",
            "AddMessageBody",
            "MessageBatchBody",
            "CommitSessionBody",
            "UpdateConfigBody",
            "Part",
            "TextPart",
            "ContextPart",
            "ImagePart",
            "ToolPart",
            "AutoCommitInput",
            "MemoryPolicyInput",
            "ExtractionConfigInput",
            "ExtractionMetadataInput",
            "EventTagsInput",
            "MigrateBody",
        ] {
            assert!(schemas.get(name).is_some(), "schema {name} missing");
        }
        assert_eq!(schemas["Part"]["oneOf"].as_array().map(Vec::len), Some(4));
        assert!(schemas["MemoryPolicyInput"]["properties"]
            .get("self")
            .is_some());
        assert!(schemas["ContextPart"]["properties"]
            .get("abstract")
            .is_some());
    }

    /// Two request types with one schema name would silently share one definition.
    #[test]
    fn schema_names_are_unique() {
        let mut schemas: Schemas = Vec::new();
        for op in operations() {
            if let Body::Json(add, _) = op.body {
                add(&mut schemas);
            }
        }
        let mut seen: std::collections::HashMap<String, String> = Default::default();
        for (name, schema) in schemas {
            let text = serde_json::to_string(&schema).expect("schema JSON");
            if let Some(before) = seen.insert(name.clone(), text.clone()) {
                assert_eq!(before, text, "two different schemas are named {name}");
            }
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        let text = document_json();
        let doc: Value = serde_json::from_str(text).expect("JSON");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("\"$ref\":\"#/components/schemas/") {
            rest = &rest[at + "\"$ref\":\"#/components/schemas/".len()..];
            let name = &rest[..rest.find('"').expect("closing quote")];
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
    }
}
