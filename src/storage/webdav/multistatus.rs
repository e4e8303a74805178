//! The PROPFIND answer (RFC 4918 §9.1): a `207 Multi-Status` document with the live properties
//! file managers and sync tools read (type, length, content type, modification time, ETag).
//! Depth 0 is the node itself; depth 1 adds its visible children, at most `limit` of them
//! (0.5.2: 10,000), so the answer is bounded whatever the directory holds.

use std::time::SystemTime;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use quick_xml::escape::escape;
use sha2::{Digest, Sha256};

use super::is_hidden;
use crate::error::ServiceResult;
use crate::identity::Identity;
use crate::storage::acl::{AclView, Shown};
use crate::storage::fs::{stat, walk, StorageFail};
use crate::storage::uri::{self, VikingUri};
use crate::storage::{Meta, Storage};

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
    let mut out = String::with_capacity(1024);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">");
    let own_name = rel.last().copied().unwrap_or("resources");
    response(
        &mut out,
        &href(req.href_base, &rel, None, meta.is_dir()),
        own_name,
        &meta,
    );
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
        out.reserve(entries.len() * 512);
        for e in &entries {
            let h = href(req.href_base, &rel, Some(&e.name), e.meta.is_dir());
            response(&mut out, &h, &e.name, &e.meta);
        }
    }
    out.push_str("</D:multistatus>\n");
    Ok(Some(out.into_bytes()))
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
    let v = meta.version.as_ref()?;
    let digest = Sha256::digest(v.0.as_bytes());
    Some(format!("\"{}\"", hex::encode(&digest[..12])))
}

/// An HTTP date (RFC 1123), as `getlastmodified` and `Last-Modified` carry it.
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

fn response(out: &mut String, href: &str, name: &str, meta: &Meta) {
    out.push_str("<D:response><D:href>");
    out.push_str(&escape(href));
    out.push_str("</D:href><D:propstat><D:prop><D:displayname>");
    out.push_str(&escape(name));
    out.push_str("</D:displayname>");
    if meta.is_dir() {
        out.push_str("<D:resourcetype><D:collection/></D:resourcetype>");
        out.push_str("<D:getcontenttype>httpd/unix-directory</D:getcontenttype>");
    } else {
        out.push_str("<D:resourcetype/><D:getcontentlength>");
        out.push_str(itoa::Buffer::new().format(meta.size));
        out.push_str("</D:getcontentlength><D:getcontenttype>");
        out.push_str(&escape(content_type(name)));
        out.push_str("</D:getcontenttype>");
        if let Some(tag) = etag(meta) {
            out.push_str("<D:getetag>");
            out.push_str(&escape(tag));
            out.push_str("</D:getetag>");
        }
    }
    out.push_str("<D:getlastmodified>");
    out.push_str(&http_date(meta.modified));
    out.push_str("</D:getlastmodified></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>");
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
