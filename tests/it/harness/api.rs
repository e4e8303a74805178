//! Clients of the API for tests: a dev-mode caller (identity from headers), admin-API helpers
//! as ROOT, and envelope assertions.

use serde_json::{json, Value};

use super::{Resp, Server, Storage, ROOT_KEY};

/// A dev-mode client bound to one account/user.
pub struct Dev<'a> {
    pub s: &'a Server,
    pub account: &'a str,
    pub user: &'a str,
}

/// Percent-encode a query value completely, so the server sees exactly `v` after decoding.
pub fn q(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl<'a> Dev<'a> {
    pub fn new(s: &'a Server, account: &'a str, user: &'a str) -> Self {
        Dev { s, account, user }
    }
    /// acme/alice, the sessions tests' caller.
    pub fn alice(s: &'a Server) -> Self {
        Dev::new(s, "acme", "alice")
    }
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let headers = [
            ("X-OpenViking-Account", self.account),
            ("X-OpenViking-User", self.user),
            ("Content-Type", "application/json"),
        ];
        self.s.raw(method, path, &headers, &bytes)
    }
    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None)
    }
    pub fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, None)
    }
    pub fn post(&self, path: &str, body: Value) -> Resp {
        self.call("POST", path, Some(body))
    }
    pub fn ls(&self, uri: &str, extra: &str) -> Resp {
        self.get(&format!("/api/v1/fs/ls?uri={}{extra}", q(uri)))
    }
    pub fn tree(&self, uri: &str, extra: &str) -> Resp {
        self.get(&format!("/api/v1/fs/tree?uri={}{extra}", q(uri)))
    }
    pub fn stat(&self, uri: &str) -> Resp {
        self.get(&format!("/api/v1/fs/stat?uri={}", q(uri)))
    }
    pub fn mkdir(&self, uri: &str, description: Option<&str>) -> Resp {
        let mut body = json!({"uri": uri});
        if let Some(d) = description {
            body["description"] = d.into();
        }
        self.post("/api/v1/fs/mkdir", body)
    }
    pub fn rm(&self, uri: &str, recursive: bool) -> Resp {
        self.delete(&format!("/api/v1/fs?uri={}&recursive={recursive}", q(uri)))
    }
    pub fn mv(&self, from: &str, to: &str) -> Resp {
        self.post("/api/v1/fs/mv", json!({"from_uri": from, "to_uri": to}))
    }
    pub fn write(&self, uri: &str, content: &str) -> Resp {
        self.post(
            "/api/v1/content/write",
            json!({"uri": uri, "content": content}),
        )
    }
    pub fn write_mode(&self, uri: &str, content: &str, mode: &str) -> Resp {
        self.post(
            "/api/v1/content/write",
            json!({"uri": uri, "content": content, "mode": mode}),
        )
    }
    pub fn read(&self, uri: &str, extra: &str) -> Resp {
        self.get(&format!("/api/v1/content/read?uri={}{extra}", q(uri)))
    }
    /// Write, asserting success.
    pub fn put_file(&self, uri: &str, content: &str) {
        let r = self.write(uri, content);
        assert_eq!(r.status, 200, "write {uri}: {:?}", r.body);
    }
}

/// Put a file at `/local/<rel>` behind the server's back, on either backend. On local disk it
/// skips the backend's fsyncs, so planting thousands of files stays fast.
pub fn plant(st: &Storage, rel: &str, data: &[u8]) {
    if st.is_s3() {
        st.write(rel, data);
    } else {
        let path = st.local(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, data).expect("plant");
    }
}

/// Assert an error envelope with this status and code; returns the error object.
#[track_caller]
pub fn err(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.raw));
    assert_eq!(r.body["status"], "error", "{:?}", r.body);
    assert_eq!(r.code(), code, "{:?}", r.body);
    r.body["error"].clone()
}

/// Assert a success envelope; returns its result.
#[track_caller]
pub fn ok(r: &Resp) -> &Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.raw));
    assert_eq!(r.body["status"], "ok");
    r.result()
}

pub const ACCOUNTS: &str = "/api/v1/admin/accounts";

/// A1 as ROOT; returns the admin's key.
pub fn create_account(s: &Server, account: &str, admin: &str) -> String {
    let r = s.post(
        ACCOUNTS,
        Some(ROOT_KEY),
        json!({"account_id": account, "admin_user_id": admin}),
    );
    assert_eq!(r.status, 200, "create {account}: {:?}", r.body);
    r.result()["user_key"].as_str().unwrap().to_string()
}

/// A4 with `key`; returns the new user's key.
pub fn register(s: &Server, key: &str, account: &str, user: &str, role: &str) -> String {
    let r = s.post(
        &format!("{ACCOUNTS}/{account}/users"),
        Some(key),
        json!({"user_id": user, "role": role}),
    );
    assert_eq!(r.status, 200, "register {account}/{user}: {:?}", r.body);
    r.result()["user_key"].as_str().unwrap().to_string()
}

/// Who the server says `key` is (`None` on 401).
pub fn whoami(s: &Server, key: &str) -> Option<String> {
    let r = s.get("/api/v1/system/status", Some(key));
    match r.status {
        200 => Some(r.result()["user"].as_str().unwrap_or_default().to_string()),
        401 => None,
        other => panic!("unexpected status {other}: {:?}", r.body),
    }
}

/// The AuthActor's status (observer, format=json).
pub fn auth_status(s: &Server) -> Value {
    let r = s.get("/api/v1/observer/system?format=json", Some(ROOT_KEY));
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.result()["components"]["auth"]["status"].clone()
}

/// Bump the registry generation marker for `account`, as another instance would after a write.
pub fn announce(st: &Storage, account: &str) {
    let path = st.at("_system/registry_generation.json");
    let mut m: Value = path
        .read()
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({"generation": 0, "log": []}));
    let g = m["generation"].as_u64().unwrap() + 1;
    m["generation"] = g.into();
    m["log"]
        .as_array_mut()
        .unwrap()
        .push(json!({"generation": g, "accounts": [account]}));
    // A whole-file replace is atomic on both backends.
    path.write(serde_json::to_vec_pretty(&m).unwrap());
}
