//! WebDAV request bodies (PROPFIND, PROPPATCH, LOCK): parsed into a small namespace-resolved
//! tree (bounded: the caller caps the body size; nesting is capped here), then read as what
//! each method asks. Malformed XML is a 400 (RFC 4918 §8.2).

use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::XmlVersion;

use crate::error::{ServiceError, ServiceResult};

/// The WebDAV namespace.
pub const DAV: &str = "DAV:";
/// Longest lock owner description kept (the client's `<owner>`; beyond: 400).
pub const MAX_OWNER_BYTES: usize = 4096;
/// Deepest element nesting read.
const MAX_DEPTH: usize = 64;

/// An element: namespace (`""` for none), local name, unprefixed attributes, children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(ns, name))
    }

    /// The concatenated text below this element.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Element(e) => out.push_str(&e.text()),
            }
        }
        out
    }

    /// The children as a self-contained XML fragment: every element declares its own default
    /// namespace, so the fragment means the same wherever it is embedded.
    pub fn inner_xml(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            write_node(&mut out, n);
        }
        out
    }
}

fn write_node(out: &mut String, node: &Node) {
    match node {
        Node::Text(t) => out.push_str(&escape(t.as_str())),
        Node::Element(e) => {
            out.push('<');
            out.push_str(&e.name);
            out.push_str(" xmlns=\"");
            out.push_str(&escape(e.ns.as_str()));
            out.push('"');
            for (k, v) in &e.attrs {
                out.push(' ');
                out.push_str(k);
                out.push_str("=\"");
                out.push_str(&escape(v.as_str()));
                out.push('"');
            }
            if e.children.is_empty() {
                out.push_str("/>");
            } else {
                out.push('>');
                for c in &e.children {
                    write_node(out, c);
                }
                out.push_str("</");
                out.push_str(&e.name);
                out.push('>');
            }
        }
    }
}

fn invalid(why: impl std::fmt::Display) -> ServiceError {
    ServiceError::invalid_argument(format!("request body is not well-formed XML: {why}"))
}

/// Parse a whole body into its root element (`None` for an empty or blank body).
pub fn parse(body: &[u8]) -> ServiceResult<Option<Element>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut reader = quick_xml::reader::NsReader::from_reader(body);
    let mut buf = Vec::new();
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let (ns, event) = reader.read_resolved_event_into(&mut buf).map_err(invalid)?;
        let ns = match ns {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(p) => {
                return Err(invalid(format!(
                    "undeclared namespace prefix '{}'",
                    String::from_utf8_lossy(&p)
                )))
            }
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root.is_some() {
                    return Err(invalid("more than one root element"));
                }
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a = a.map_err(invalid)?;
                    let key = a.key.as_ref();
                    if key.starts_with(b"xmlns:") && a.value.is_empty() {
                        // Namespaces in XML 1.0: a prefix may not be bound to the empty name.
                        return Err(invalid("a namespace prefix bound to \"\""));
                    }
                    if key.starts_with(b"xmlns") || key.contains(&b':') {
                        continue;
                    }
                    let value = a
                        .normalized_value(XmlVersion::Implicit1_0)
                        .map_err(invalid)?
                        .into_owned();
                    attrs.push((String::from_utf8_lossy(key).into_owned(), value));
                }
                let el = Element {
                    ns,
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    attrs,
                    children: Vec::new(),
                };
                if matches!(event, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(Node::Element(el)),
                        None => root = Some(el),
                    }
                } else {
                    if stack.len() >= MAX_DEPTH {
                        return Err(invalid("elements nested too deeply"));
                    }
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let Some(el) = stack.pop() else {
                    return Err(invalid("unbalanced end tag"));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let text = t.xml10_content().map_err(invalid)?.into_owned();
                match stack.last_mut() {
                    Some(parent) => push_text(parent, &text),
                    None if text.trim().is_empty() => {}
                    None => return Err(invalid("text outside the root element")),
                }
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref().map_err(invalid)? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(invalid)?;
                        resolve_predefined_entity(&name)
                            .ok_or_else(|| invalid(format!("unknown entity &{name};")))?
                            .to_string()
                    }
                };
                match stack.last_mut() {
                    Some(parent) => push_text(parent, &ch),
                    None => return Err(invalid("text outside the root element")),
                }
            }
            Event::CData(t) => {
                let text = String::from_utf8_lossy(&t.into_inner()).into_owned();
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(Node::Text(text));
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(invalid("unclosed element"));
    }
    root.map(Some).ok_or_else(|| invalid("no root element"))
}

/// Text joins the text before it (entity references arrive as separate events).
fn push_text(parent: &mut Element, text: &str) {
    if let Some(Node::Text(t)) = parent.children.last_mut() {
        t.push_str(text);
    } else {
        parent.children.push(Node::Text(text.to_string()));
    }
}

/// A property name: namespace and local name.
pub type PropName = (String, String);

/// What a PROPFIND asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropfindKind {
    /// Every property (an empty body, `allprop`).
    All,
    /// The names only.
    Names,
    /// These properties.
    Named(Vec<PropName>),
}

/// Read a PROPFIND body.
pub fn propfind(body: &[u8]) -> ServiceResult<PropfindKind> {
    let Some(root) = parse(body)? else {
        return Ok(PropfindKind::All);
    };
    if !root.is(DAV, "propfind") {
        return Err(ServiceError::invalid_argument(
            "PROPFIND body must be a DAV:propfind element",
        ));
    }
    if root.child(DAV, "propname").is_some() {
        return Ok(PropfindKind::Names);
    }
    if let Some(prop) = root.child(DAV, "prop") {
        return Ok(PropfindKind::Named(
            prop.elements()
                .map(|e| (e.ns.clone(), e.name.clone()))
                .collect(),
        ));
    }
    Ok(PropfindKind::All)
}

/// One PROPPATCH instruction, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropChange {
    /// Set a property to a value (a self-contained XML fragment).
    Set(PropName, String),
    Remove(PropName),
}

/// Read a PROPPATCH body (`propertyupdate` of `set`/`remove`, in order).
pub fn proppatch(body: &[u8]) -> ServiceResult<Vec<PropChange>> {
    let bad = |m: &str| ServiceError::invalid_argument(m.to_string());
    let root = parse(body)?.ok_or_else(|| bad("PROPPATCH needs a DAV:propertyupdate body"))?;
    if !root.is(DAV, "propertyupdate") {
        return Err(bad("PROPPATCH body must be a DAV:propertyupdate element"));
    }
    let mut out = Vec::new();
    for op in root.elements() {
        let set = op.is(DAV, "set");
        if !set && !op.is(DAV, "remove") {
            continue;
        }
        for prop in op.elements().filter(|e| e.is(DAV, "prop")) {
            for p in prop.elements() {
                let name = (p.ns.clone(), p.name.clone());
                out.push(if set {
                    PropChange::Set(name, p.inner_xml())
                } else {
                    PropChange::Remove(name)
                });
            }
        }
    }
    if out.is_empty() {
        return Err(bad("PROPPATCH names no property"));
    }
    Ok(out)
}

/// What a LOCK body asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub shared: bool,
    /// The `<owner>` content, as a self-contained XML fragment.
    pub owner: String,
}

/// Read a LOCK body (`lockinfo`: write lock, exclusive or shared, optional owner).
pub fn lockinfo(body: &[u8]) -> ServiceResult<Option<LockInfo>> {
    let bad = |m: &str| ServiceError::invalid_argument(m.to_string());
    let Some(root) = parse(body)? else {
        return Ok(None);
    };
    if !root.is(DAV, "lockinfo") {
        return Err(bad("LOCK body must be a DAV:lockinfo element"));
    }
    let scope = root
        .child(DAV, "lockscope")
        .ok_or_else(|| bad("lockinfo needs a lockscope"))?;
    let shared = match (
        scope.child(DAV, "exclusive").is_some(),
        scope.child(DAV, "shared").is_some(),
    ) {
        (true, false) => false,
        (false, true) => true,
        _ => return Err(bad("lockscope must be exclusive or shared")),
    };
    let write = root
        .child(DAV, "locktype")
        .is_some_and(|t| t.child(DAV, "write").is_some());
    if !write {
        return Err(bad("only write locks exist (locktype write)"));
    }
    let owner = root
        .child(DAV, "owner")
        .map(Element::inner_xml)
        .unwrap_or_default();
    if owner.len() > MAX_OWNER_BYTES {
        return Err(bad("lock owner longer than 4 KiB"));
    }
    Ok(Some(LockInfo { shared, owner }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_bodies() {
        assert_eq!(propfind(b"").unwrap(), PropfindKind::All);
        let k = propfind(
            br#"<propfind xmlns="DAV:"><prop><getetag/><x:foo xmlns:x="urn:x"/><bar xmlns=""/></prop></propfind>"#,
        )
        .unwrap();
        assert_eq!(
            k,
            PropfindKind::Named(vec![
                (DAV.into(), "getetag".into()),
                ("urn:x".into(), "foo".into()),
                ("".into(), "bar".into())
            ])
        );
        let p = proppatch(
            br#"<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:a>v &amp; <Z:b k="1">w</Z:b></Z:a></D:prop></D:set><D:remove><D:prop><Z:c/></D:prop></D:remove></D:propertyupdate>"#,
        )
        .unwrap();
        assert_eq!(
            p,
            vec![
                PropChange::Set(
                    ("urn:z".into(), "a".into()),
                    r#"v &amp; <b xmlns="urn:z" k="1">w</b>"#.into()
                ),
                PropChange::Remove(("urn:z".into(), "c".into())),
            ]
        );
        let l = lockinfo(
            br#"<lockinfo xmlns="DAV:"><lockscope><shared/></lockscope><locktype><write/></locktype><owner><href>me</href></owner></lockinfo>"#,
        )
        .unwrap()
        .unwrap();
        assert!(l.shared);
        assert_eq!(l.owner, r#"<href xmlns="DAV:">me</href>"#);
        for bad in [&b"<a>"[..], b"<a/><b/>", b"junk", b"<D:propfind/>"] {
            assert!(parse(bad).is_err());
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
        assert!(lockinfo(br#"<lockinfo xmlns="DAV:"><lockscope/></lockinfo>"#).is_err());
    }
}
