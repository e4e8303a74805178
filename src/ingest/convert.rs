//! Format detection and conversion of one document to Markdown text: HTML through `htmd`,
//! PDF through `lopdf`, text in UTF-8 or UTF-16 (with a byte-order mark). Runs inside the
//! parser child process for untrusted formats.

use super::names::extension;

/// What a file is, by name and leading bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Markdown,
    Text,
    Code,
    Html,
    Pdf,
    Zip,
    /// Anything else: stored unchanged (with a warning), or refused under `strict`.
    Other,
}

const MARKDOWN: &[&str] = &["md", "markdown", "mdown", "mkd"];
const TEXT: &[&str] = &[
    "txt", "text", "rst", "log", "csv", "tsv", "adoc", "org", "tex",
];
const HTML: &[&str] = &["html", "htm", "xhtml"];
const CODE: &[&str] = &[
    "rs",
    "py",
    "js",
    "mjs",
    "cjs",
    "ts",
    "tsx",
    "jsx",
    "go",
    "java",
    "kt",
    "kts",
    "scala",
    "c",
    "h",
    "cc",
    "cpp",
    "cxx",
    "hpp",
    "hh",
    "cs",
    "rb",
    "php",
    "swift",
    "m",
    "mm",
    "sh",
    "bash",
    "zsh",
    "fish",
    "ps1",
    "lua",
    "pl",
    "pm",
    "r",
    "jl",
    "dart",
    "ex",
    "exs",
    "erl",
    "hs",
    "ml",
    "mli",
    "clj",
    "vue",
    "svelte",
    "sql",
    "toml",
    "yaml",
    "yml",
    "json",
    "jsonl",
    "xml",
    "ini",
    "cfg",
    "conf",
    "env",
    "properties",
    "gradle",
    "cmake",
    "mk",
    "proto",
    "graphql",
    "css",
    "scss",
    "less",
    "dockerfile",
    "makefile",
    "tf",
    "nix",
    "zig",
    "v",
    "vhd",
    "sv",
    "asm",
    "s",
    "bat",
    "cmd",
    "gitignore",
    "editorconfig",
    "lock",
];

/// Classify a file by its name, falling back to magic bytes.
pub fn kind_of(name: &str, head: &[u8]) -> Kind {
    if head.starts_with(b"%PDF-") {
        return Kind::Pdf;
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Kind::Zip;
    }
    let ext = extension(name);
    let lower = name.to_ascii_lowercase();
    match ext.as_str() {
        e if MARKDOWN.contains(&e) => Kind::Markdown,
        e if TEXT.contains(&e) => Kind::Text,
        e if HTML.contains(&e) => Kind::Html,
        e if CODE.contains(&e) => Kind::Code,
        "pdf" => Kind::Pdf,
        "zip" => Kind::Zip,
        _ if matches!(
            lower.as_str(),
            "makefile" | "dockerfile" | "license" | "readme" | "changelog" | "authors" | "notice"
        ) =>
        {
            Kind::Text
        }
        _ => Kind::Other,
    }
}

/// Decode text: UTF-8 (a BOM is dropped) or UTF-16 with a BOM. Anything else is not text.
pub fn decode_text(bytes: &[u8]) -> Option<String> {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return std::str::from_utf8(rest).ok().map(str::to_string);
    }
    for (bom, little) in [(b"\xFF\xFE", true), (b"\xFE\xFF", false)] {
        if let Some(rest) = bytes.strip_prefix(bom) {
            if rest.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = rest
                .chunks_exact(2)
                .map(|c| {
                    if little {
                        u16::from_le_bytes([c[0], c[1]])
                    } else {
                        u16::from_be_bytes([c[0], c[1]])
                    }
                })
                .collect();
            return String::from_utf16(&units).ok();
        }
    }
    let text = std::str::from_utf8(bytes).ok()?;
    // NUL bytes mean binary even when they happen to be valid UTF-8.
    if text.contains('\0') {
        return None;
    }
    Some(text.to_string())
}

/// HTML to Markdown; scripts, styles and other non-content elements are dropped.
pub fn html_to_markdown(html: &str) -> Result<String, String> {
    let converter = htmd::HtmlToMarkdown::builder()
        .skip_tags(vec![
            "script", "style", "noscript", "template", "iframe", "svg", "canvas", "head",
        ])
        .build();
    let md = converter
        .convert(html)
        .map_err(|e| format!("HTML conversion failed: {e}"))?;
    let title = html_title(html);
    Ok(match title {
        Some(t) if !md.trim_start().starts_with("# ") => format!("# {t}\n\n{}", md.trim()),
        _ => md.trim().to_string(),
    })
}

fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = lower[start..].find('>')? + start + 1;
    let end = lower[open_end..].find("</title>")? + open_end;
    let t = html.get(open_end..end)?.trim();
    (!t.is_empty() && t.len() < 300).then(|| t.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The text of every page of a PDF, pages separated by blank lines.
pub fn pdf_to_text(bytes: &[u8]) -> Result<String, String> {
    let doc = lopdf::Document::load_mem(bytes).map_err(|e| format!("unreadable PDF: {e}"))?;
    if doc.is_encrypted() {
        return Err("encrypted PDFs are not supported".into());
    }
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    let mut out = String::new();
    for page in pages {
        match doc.extract_text(&[page]) {
            Ok(text) => {
                let text = text.trim();
                if !text.is_empty() {
                    if !out.is_empty() {
                        out.push_str("\n\n");
                    }
                    out.push_str(text);
                }
            }
            Err(e) => return Err(format!("cannot extract text from PDF page {page}: {e}")),
        }
    }
    if out.trim().is_empty() {
        return Err("the PDF contains no extractable text (scanned images need OCR)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind_of("a.md", b"# x"), Kind::Markdown);
        assert_eq!(kind_of("a.bin", b"%PDF-1.4"), Kind::Pdf);
        assert_eq!(kind_of("x", b"PK\x03\x04"), Kind::Zip);
        assert_eq!(kind_of("main.rs", b"fn"), Kind::Code);
        assert_eq!(kind_of("page.HTML", b"<"), Kind::Html);
        assert_eq!(kind_of("photo.jpg", b"\xff\xd8"), Kind::Other);
    }

    #[test]
    fn text_decoding() {
        assert_eq!(decode_text(b"\xEF\xBB\xBFhi").as_deref(), Some("hi"));
        assert_eq!(decode_text(b"\xFF\xFEh\0i\0").as_deref(), Some("hi"));
        assert_eq!(decode_text(b"\xff\xfe\x00"), None);
        assert_eq!(decode_text(b"a\0b"), None);
        assert_eq!(decode_text(b"\xc3\x28"), None);
    }

    #[test]
    fn html_becomes_markdown() {
        let md = html_to_markdown(
            "<html><head><title>Guide</title><script>evil()</script></head>\
             <body><h2>Setup</h2><p>Run <b>it</b>.</p></body></html>",
        )
        .unwrap();
        assert!(md.starts_with("# Guide"), "{md}");
        assert!(md.contains("## Setup") && md.contains("**it**"), "{md}");
        assert!(!md.contains("evil"));
    }
}

/// A one-page PDF with `text`, for tests here and in tests/it.
#[cfg(test)]
pub fn sample_pdf(text: &str) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{dictionary, Document, Object, Stream};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier",
    });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let content = Content {
        operations: vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new("Td", vec![72.into(), 720.into()]),
            Operation::new("Tj", vec![Object::string_literal(text)]),
            Operation::new("ET", vec![]),
        ],
    };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

#[cfg(test)]
mod pdf_tests {
    #[test]
    fn pdf_text_is_extracted() {
        let pdf = super::sample_pdf("Longship reads PDF files.");
        let text = super::pdf_to_text(&pdf).unwrap();
        assert!(text.contains("Longship reads PDF files."), "{text:?}");
        assert!(super::pdf_to_text(b"%PDF-1.4 garbage").is_err());
    }
}
