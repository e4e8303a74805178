//! The model-free token estimate of spec §9.1, counted in quarter tokens so it is exact.

use serde_json::Value;

/// Quarter-token weight of one code point: 1.5 for CJK/Hangul/Kana/fullwidth (and CJK
/// extensions B–F), 2.0 for other astral code points, 0.25 otherwise.
pub fn char_quarters(c: char) -> u64 {
    let cp = c as u32;
    let wide = matches!(cp,
        0x1100..=0x11FF
        | 0x3000..=0x30FF
        | 0x3130..=0x318F
        | 0x31F0..=0x31FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xAC00..=0xD7AF
        | 0xF900..=0xFAFF
        | 0xFF00..=0xFFEF
        | 0x20000..=0x2EBEF);
    if wide {
        6
    } else if cp > 0xFFFF {
        8
    } else {
        1
    }
}

/// Quarter tokens of a text; an ASCII text costs one quarter per byte.
pub fn text_quarters(s: &str) -> u64 {
    if s.is_ascii() {
        return s.len() as u64;
    }
    s.chars().map(char_quarters).sum()
}

/// Estimated tokens of a text.
pub fn estimate_text(s: &str) -> u64 {
    text_quarters(s).div_ceil(4)
}

/// Estimated tokens of one message: text of text parts, abstracts of context parts, and a tool
/// part's id, name, JSON input and output, all counted together and rounded up once.
pub fn estimate_message(message: &Value) -> u64 {
    let mut q = 0u64;
    let Some(parts) = message.get("parts").and_then(Value::as_array) else {
        return 0;
    };
    for part in parts {
        let s = |k: &str| part.get(k).and_then(Value::as_str).unwrap_or("");
        match part.get("type").and_then(Value::as_str) {
            Some("text") => q += text_quarters(s("text")),
            Some("context") => q += text_quarters(s("abstract")),
            Some("tool") => {
                q += text_quarters(s("tool_id"));
                q += text_quarters(s("tool_name"));
                if let Some(input) = part.get("tool_input").filter(|v| !v.is_null()) {
                    q += text_quarters(&python_json(input));
                }
                q += text_quarters(s("tool_output"));
            }
            _ => {}
        }
    }
    q.div_ceil(4)
}

/// JSON as Python's `json.dumps(..., ensure_ascii=False)` spells it (`", "` and `": "`), which is
/// what upstream counts for tool input.
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_py(v, &mut out);
    out
}

fn write_py(v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_py(item, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn estimates() {
        assert_eq!(estimate_text("Hello there"), 3);
        assert_eq!(estimate_text(""), 0);
        assert_eq!(estimate_text("你好"), 3); // 1.5 + 1.5
        assert_eq!(estimate_text("😀"), 2); // astral, not CJK
        assert_eq!(estimate_text("\u{20001}"), 2); // CJK ext B counts 1.5 → ceil 2
        assert_eq!(estimate_text("\u{20001}\u{20001}"), 3);
        let m = json!({"parts": [
            {"type": "text", "text": "abcd"},
            {"type": "context", "abstract": "efgh"},
            {"type": "image_url", "image_url": {"url": "http://x"}},
            {"type": "tool", "tool_id": "t", "tool_name": "n", "tool_input": {"a": 1}, "tool_output": "o"}
        ]});
        // 4 + 4 + (1 + 1 + len("{\"a\": 1}")=8 + 1) = 19 quarters-of-ASCII chars → ceil(19/4)
        assert_eq!(estimate_message(&m), 5);
        assert_eq!(python_json(&json!({"a": [1, "x"]})), "{\"a\": [1, \"x\"]}");
    }
}
