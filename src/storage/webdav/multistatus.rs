//! The PROPFIND answer (RFC 4918 §9.1): a `207 Multi-Status` document with the live properties
//! file managers and sync tools read (type, length, content type, modification time, ETag).
//! Depth 0 is the node itself; depth 1 adds its visible children, at most `limit` of them
//! (0.5.2: 10,000), so the answer is bounded whatever the directory holds.

use std::time::SystemTime;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use quick_xml::escape::escape;

use super::is_hidden;
use super::locks::{Lock, LockTable};
use super::props::{self, DeadProp};
use super::xml::PropfindKind;
use crate::error::ServiceResult;
use crate::identity::Identity;
use crate::storage::acl::{AclView, Shown};
use crate::storage::fs::{stat, walk, StorageFail};
use crate::storage::uri::{self, VikingUri};
use crate::storage::{Meta, Storage, StorePath};

/// Bytes of one href segment that are percent-encoded (RFC 3986 `pchar` stays literal).
const HREF_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// What a PROPFIND is asked for.
pub struct Request<'a> {
    /// The node: `viking://resources/…`.
    pub uri: &'a VikingUri,
    /// The href of the resources root (`/webdav/resources`).
    pub href_base: &'a str,
    /// Depth 1 (infinity is answered as 1); false = depth 0.
    pub children: bool,
    /// Most children listed.
    pub limit: usize,
    /// Which properties.
    pub kind: &'a PropfindKind,
}

/// One resource of the answer.
struct Item<'a> {
    href: String,
    name: &'a str,
    meta: &'a Meta,
    dead: &'a [DeadProp],
    locks: Vec<(StorePath, Lock)>,
}

/// The answer, or `None` when the node does not exist.
pub fn propfind(
    storage: &dyn Storage,
    who: &Identity,
    req: &Request<'_>,
) -> ServiceResult<Option<Vec<u8>>> {
    let Some(meta) = stat(storage, req.uri)? else {
        return Ok(None);
    };
    let rel: Vec<&str> = req
        .uri
        .segments()
        .iter()
        .skip(1)
        .map(String::as_str)
        .collect();
    let mut table = LockTable::load(storage, &who.account)?;
    let own_dead =
        props::read(storage, req.uri.store_path()).map_err(|e| StorageFail(req.uri).map(e))?;
    let mut out = String::with_capacity(1024);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">");
    let own_name = rel.last().copied().unwrap_or("resources");
    let item = Item {
        href: href(req.href_base, &rel, None, meta.is_dir()),
        name: own_name,
        meta: &meta,
        dead: &own_dead,
        locks: table.covering(req.uri.store_path())?,
    };
    response(&mut out, req, &item);
    if req.children && meta.is_dir() {
        let mut entries = storage
            .list(req.uri.store_path())
            .map_err(|e| StorageFail(req.uri).map(e))?;
        // Children the caller may not read are left out (a WebDAV client has no use for a
        // placeholder it cannot open), as the JSON listing does with `acl.hide_denied`.
        let acl = AclView::for_caller(who);
        let readable = |name: &str| match (&acl, req.uri.child(name)) {
            (Some(view), Ok(child)) => view.shown(&child) == Shown::Full,
            (Some(_), Err(_)) => false,
            (None, _) => true,
        };
        entries.retain(|e| {
            !is_hidden(&e.name) && uri::child_visible(req.uri, &e.name, who) && readable(&e.name)
        });
        entries.sort_by(|a, b| walk::caseless(&a.name, &b.name));
        entries.truncate(req.limit);
        let dead = props::read_children(storage, req.uri.store_path())
            .map_err(|e| StorageFail(req.uri).map(e))?;
        out.reserve(entries.len() * 512);
        for e in &entries {
            let node = req.uri.store_path().join(&e.name)?;
            let item = Item {
                href: href(req.href_base, &rel, Some(&e.name), e.meta.is_dir()),
                name: &e.name,
                meta: &e.meta,
                dead: dead.get(&e.name).map(Vec::as_slice).unwrap_or_default(),
                locks: table.covering(&node)?,
            };
            response(&mut out, req, &item);
        }
    }
    out.push_str("</D:multistatus>\n");
    Ok(Some(out.into_bytes()))
}

/// The href of a stored node (its path below `<account>/resources`).
pub fn node_href(base: &str, node: &StorePath, is_dir: bool) -> String {
    let rel: Vec<&str> = node.segments().skip(2).collect();
    href(base, &rel, None, is_dir)
}

/// The href of `rel` (+ `child`), each segment percent-encoded; collections end with `/`.
fn href(base: &str, rel: &[&str], child: Option<&str>, is_dir: bool) -> String {
    let mut h = base.to_string();
    for seg in rel.iter().copied().chain(child) {
        h.push('/');
        h.extend(utf8_percent_encode(seg, HREF_SEGMENT));
    }
    if is_dir {
        h.push('/');
    }
    h
}

/// The content type clients are told, from the name (0.5.2 guesses from the extension too).
pub fn content_type(name: &str) -> String {
    mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string()
}

/// A strong ETag from the stored version (opaque: a hash, never a path or inode).
pub fn etag(meta: &Meta) -> Option<String> {
    super::conditions::etag_of(meta)
}

/// An HTTP date (RFC 1123), as `getlastmodified` and `Last-Modified` carry it.
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// The live properties of a resource: (name in `DAV:`, rendered value).
fn live_props(req: &Request<'_>, item: &Item<'_>) -> Vec<(&'static str, String)> {
    let meta = item.meta;
    let mut out = vec![("displayname", escape(item.name).into_owned())];
    if meta.is_dir() {
        out.push(("resourcetype", "<D:collection/>".into()));
        out.push(("getcontenttype", "httpd/unix-directory".into()));
    } else {
        out.push(("resourcetype", String::new()));
        out.push((
            "getcontentlength",
            itoa::Buffer::new().format(meta.size).to_string(),
        ));
        out.push((
            "getcontenttype",
            escape(content_type(item.name)).into_owned(),
        ));
        if let Some(tag) = etag(meta) {
            out.push(("getetag", escape(tag).into_owned()));
        }
    }
    out.push(("getlastmodified", http_date(meta.modified)));
    let mut locks = String::new();
    for (root, lock) in &item.locks {
        activelock(&mut locks, req.href_base, root, lock);
    }
    out.push(("lockdiscovery", locks));
    out.push(("supportedlock", SUPPORTED_LOCK.into()));
    out
}

/// The names of the live properties (what `allprop` and `propname` list).
pub const LIVE_NAMES: [&str; 9] = [
    "displayname",
    "resourcetype",
    "getcontentlength",
    "getcontenttype",
    "getetag",
    "getlastmodified",
    "lockdiscovery",
    "supportedlock",
    "creationdate",
];

const SUPPORTED_LOCK: &str = "<D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry><D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>";

/// One `activelock` (RFC 4918 §14.1), for `lockdiscovery` and the LOCK answer.
pub fn activelock(out: &mut String, href_base: &str, root: &StorePath, lock: &Lock) {
    out.push_str("<D:activelock><D:locktype><D:write/></D:locktype><D:lockscope>");
    out.push_str(if lock.shared {
        "<D:shared/>"
    } else {
        "<D:exclusive/>"
    });
    out.push_str("</D:lockscope><D:depth>");
    out.push_str(if lock.deep { "infinity" } else { "0" });
    out.push_str("</D:depth>");
    if !lock.owner.is_empty() {
        out.push_str("<D:owner>");
        out.push_str(&lock.owner);
        out.push_str("</D:owner>");
    }
    out.push_str("<D:timeout>Second-");
    out.push_str(itoa::Buffer::new().format(lock.seconds_left()));
    out.push_str("</D:timeout><D:locktoken><D:href>");
    out.push_str(&escape(lock.token.as_str()));
    out.push_str("</D:href></D:locktoken><D:lockroot><D:href>");
    // Whether the root is a collection does not matter to clients here; no trailing slash.
    out.push_str(&escape(node_href(href_base, root, false)));
    out.push_str("</D:href></D:lockroot></D:activelock>");
}

/// A property element: `DAV:` ones with the `D:` prefix, others declaring their namespace.
pub fn prop_element(out: &mut String, ns: &str, name: &str, value: Option<&str>) {
    let open_tail = match value {
        Some(v) if !v.is_empty() => Some(v),
        _ => None,
    };
    let (open, close) = if ns == "DAV:" {
        (format!("<D:{name}"), format!("</D:{name}>"))
    } else if ns.is_empty() {
        (format!("<{name} xmlns=\"\""), format!("</{name}>"))
    } else {
        (
            format!("<X:{name} xmlns:X=\"{}\"", escape(ns)),
            format!("</X:{name}>"),
        )
    };
    out.push_str(&open);
    match open_tail {
        Some(v) => {
            out.push('>');
            out.push_str(v);
            out.push_str(&close);
        }
        None => out.push_str("/>"),
    }
}

fn propstat(out: &mut String, body: &str, status: &str) {
    out.push_str("<D:propstat><D:prop>");
    out.push_str(body);
    out.push_str("</D:prop><D:status>HTTP/1.1 ");
    out.push_str(status);
    out.push_str("</D:status></D:propstat>");
}

fn response(out: &mut String, req: &Request<'_>, item: &Item<'_>) {
    out.push_str("<D:response><D:href>");
    out.push_str(&escape(item.href.as_str()));
    out.push_str("</D:href>");
    let live = live_props(req, item);
    let mut found = String::new();
    let mut missing = String::new();
    match req.kind {
        PropfindKind::All => {
            for (name, value) in &live {
                prop_element(&mut found, "DAV:", name, Some(value));
            }
            for d in item.dead {
                prop_element(&mut found, &d.ns, &d.name, Some(&d.xml));
            }
        }
        PropfindKind::Names => {
            for (name, _) in &live {
                prop_element(&mut found, "DAV:", name, None);
            }
            for d in item.dead {
                prop_element(&mut found, &d.ns, &d.name, None);
            }
        }
        PropfindKind::Named(names) => {
            for (ns, name) in names {
                let live_value = (ns == "DAV:")
                    .then(|| live.iter().find(|(n, _)| n == name))
                    .flatten();
                let dead = item.dead.iter().find(|d| &d.ns == ns && &d.name == name);
                match (live_value, dead) {
                    (Some((_, v)), _) => prop_element(&mut found, ns, name, Some(v)),
                    (None, Some(d)) => prop_element(&mut found, ns, name, Some(&d.xml)),
                    (None, None) => prop_element(&mut missing, ns, name, None),
                }
            }
        }
    }
    if !found.is_empty() || missing.is_empty() {
        propstat(out, &found, "200 OK");
    }
    if !missing.is_empty() {
        propstat(out, &missing, "404 Not Found");
    }
    out.push_str("</D:response>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn lists_visible_children_with_encoded_hrefs_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let who = Identity {
            role: Role::User,
            account: "acme".into(),
            user: "alice".into(),
        };
        let d = uri::parse("viking://resources/a dir", &who).unwrap();
        s.mkdir(d.store_path()).unwrap();
        for name in ["x <&>.md", ".abstract.md", ".overview.md", "b.png", "c"] {
            s.write(&d.store_path().join(name).unwrap(), b"12345")
                .unwrap();
        }
        let req = Request {
            uri: &d,
            href_base: "/webdav/resources",
            children: true,
            limit: 2,
            kind: &PropfindKind::All,
        };
        let xml = String::from_utf8(propfind(&s, &who, &req).unwrap().unwrap()).unwrap();
        assert!(
            xml.contains("<D:href>/webdav/resources/a%20dir/</D:href>"),
            "{xml}"
        );
        assert!(xml.contains("<D:collection/>"));
        assert!(
            xml.contains("/webdav/resources/a%20dir/b.png</D:href>"),
            "{xml}"
        );
        assert!(xml.contains("<D:getcontenttype>image/png</D:getcontenttype>"));
        assert!(xml.contains("<D:getcontentlength>5</D:getcontentlength>"));
        assert!(
            !xml.contains("abstract") && !xml.contains("overview"),
            "{xml}"
        );
        // Two children only (the limit), in name order.
        assert_eq!(xml.matches("<D:response>").count(), 3, "{xml}");
        assert!(!xml.contains("x%20%3C"), "{xml}");
        let req = Request { limit: 10, ..req };
        let xml = String::from_utf8(propfind(&s, &who, &req).unwrap().unwrap()).unwrap();
        assert!(
            xml.contains("x%20%3C&amp;%3E.md") && xml.contains("x &lt;&amp;&gt;.md"),
            "{xml}"
        );
        let missing = uri::parse("viking://resources/none", &who).unwrap();
        let req = Request {
            uri: &missing,
            ..req
        };
        assert!(propfind(&s, &who, &req).unwrap().is_none());
    }
}
