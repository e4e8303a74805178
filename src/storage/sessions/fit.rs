//! Fitting context messages to a token budget (spec SE9, 0.5.2 turn-based rule).
//!
//! Everything fits → all. Otherwise, by turns: the newest turn's user query and final
//! assistant step (shortened to head + "\n…\n" + tail if needed), then its checkpoint steps,
//! then its other steps newest first, then older turns newest first — each stage whole, until
//! one does not fit. The input messages are copies; stored messages are never modified.

use serde_json::Value;

use super::tokens;

const ELLIPSIS: &str = "\n…\n";

fn role(m: &Value) -> &str {
    m.get("role").and_then(Value::as_str).unwrap_or("")
}

fn kind(m: &Value) -> &str {
    m.get("message_kind").and_then(Value::as_str).unwrap_or("")
}

/// Same rule as `live::LightMsg::starts_turn`, on a parsed message.
pub fn starts_turn(m: &Value) -> bool {
    match kind(m) {
        "user_query" => true,
        "tool_transport" => false,
        _ => {
            let parts = m.get("parts").and_then(Value::as_array);
            let tool_only =
                parts.is_some_and(|p| !p.is_empty() && p.iter().all(|x| x["type"] == "tool"));
            role(m) == "user" && !tool_only
        }
    }
}

/// Keep the messages that fit `budget`; returns them (chronological) and their tokens.
pub fn fit(messages: Vec<Value>, budget: u64) -> (Vec<Value>, u64) {
    let toks: Vec<u64> = messages.iter().map(tokens::estimate_message).collect();
    let total: u64 = toks.iter().sum();
    if total <= budget || messages.is_empty() {
        return (messages, total);
    }
    let starts: Vec<usize> = (0..messages.len())
        .filter(|&i| starts_turn(&messages[i]))
        .collect();
    let newest_start = starts.last().copied().unwrap_or(0);
    let len = messages.len();
    let mut keep: Vec<Option<Value>> = vec![None; len];
    let mut left = budget;

    // 1. The newest turn's user query and final assistant step, shortened if needed.
    let uq = starts.last().copied();
    let last_assistant = (newest_start..len)
        .rev()
        .find(|&i| Some(i) != uq && role(&messages[i]) == "assistant");
    let must: Vec<usize> = uq.into_iter().chain(last_assistant).collect();
    let must_cost: u64 = must.iter().map(|&i| toks[i]).sum();
    if must_cost <= left {
        for &i in &must {
            keep[i] = Some(messages[i].clone());
        }
        left -= must_cost;
    } else {
        for &i in &must {
            let share = (left * toks[i]).checked_div(must_cost).unwrap_or(0);
            let short = shorten(&messages[i], share);
            let cost = tokens::estimate_message(&short).min(left);
            left -= cost;
            keep[i] = Some(short);
        }
    }
    // 2. Its checkpoint steps, then 3. its other steps, newest first, until one does not fit.
    let take_whole = |i: usize, keep: &mut Vec<Option<Value>>, left: &mut u64| -> bool {
        if toks[i] > *left {
            return false;
        }
        *left -= toks[i];
        keep[i] = Some(messages[i].clone());
        true
    };
    for i in (newest_start..len).rev() {
        if keep[i].is_none()
            && kind(&messages[i]) == "checkpoint"
            && !take_whole(i, &mut keep, &mut left)
        {
            break;
        }
    }
    for i in (newest_start..len).rev() {
        if keep[i].is_none()
            && kind(&messages[i]) != "checkpoint"
            && !take_whole(i, &mut keep, &mut left)
        {
            break;
        }
    }
    // 4. Older turns, newest first, whole.
    let mut bounds: Vec<usize> = starts.clone();
    if bounds.first() != Some(&0) {
        bounds.insert(0, 0);
    }
    let older: Vec<(usize, usize)> = bounds
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|(_, end)| *end <= newest_start && *end > 0)
        .collect();
    for &(a, b) in older.iter().rev() {
        let cost: u64 = toks[a..b].iter().sum();
        if cost > left {
            break;
        }
        left -= cost;
        for (i, slot) in keep.iter_mut().enumerate().take(b).skip(a) {
            *slot = Some(messages[i].clone());
        }
    }
    let out: Vec<Value> = keep.into_iter().flatten().collect();
    let used = out.iter().map(tokens::estimate_message).sum();
    (out, used)
}

/// A copy of `m` whose text, abstracts and tool outputs are cut to about `target` tokens.
pub fn shorten(m: &Value, target: u64) -> Value {
    let mut out = m.clone();
    let Some(parts) = out.get_mut("parts").and_then(Value::as_array_mut) else {
        return out;
    };
    let field_of = |p: &Value| match p.get("type").and_then(Value::as_str) {
        Some("text") => Some("text"),
        Some("context") => Some("abstract"),
        Some("tool") => Some("tool_output"),
        _ => None,
    };
    let shortenable: Vec<(usize, &'static str, usize)> = parts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let f = field_of(p)?;
            let n = p
                .get(f)
                .and_then(Value::as_str)
                .map_or(0, |s| s.chars().count());
            Some((i, f, n))
        })
        .collect();
    let total_chars: usize = shortenable.iter().map(|(_, _, n)| n).sum();
    if total_chars == 0 {
        return out;
    }
    // Quarter tokens available for the shortenable text, after everything else in the message.
    let fixed = {
        let mut probe = m.clone();
        if let Some(ps) = probe.get_mut("parts").and_then(Value::as_array_mut) {
            for (i, f, _) in &shortenable {
                ps[*i][*f] = Value::String(String::new());
            }
        }
        tokens::estimate_message(&probe)
    };
    let room_q = target.saturating_sub(fixed) * 4;
    for (i, f, n) in shortenable {
        let share = room_q * n as u64 / total_chars as u64;
        let Some(text) = parts[i].get(f).and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        let (short, cut) = cut_text(&text, share);
        if !cut {
            continue;
        }
        let preview = short.chars().count();
        parts[i][f] = Value::String(short);
        if f == "tool_output" {
            parts[i]["tool_output_truncated"] = true.into();
            parts[i]["tool_output_original_chars"] = n.into();
            parts[i]["tool_output_preview_chars"] = preview.into();
        }
    }
    out
}

/// Cut `text` to head + "\n…\n" + tail within `quarters` quarter tokens; returns
/// (text, was_cut).
fn cut_text(text: &str, quarters: u64) -> (String, bool) {
    if tokens::text_quarters(text) <= quarters {
        return (text.to_string(), false);
    }
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let mut room = quarters.saturating_sub(tokens::text_quarters(ELLIPSIS));
    let (mut head, mut tail) = (0usize, 0usize);
    // Take characters alternately from the front and the back while they fit.
    loop {
        let mut moved = false;
        if head + tail < n {
            let c = tokens::char_quarters(chars[head]);
            if c <= room {
                room -= c;
                head += 1;
                moved = true;
            }
        }
        if head + tail < n {
            let c = tokens::char_quarters(chars[n - 1 - tail]);
            if c <= room {
                room -= c;
                tail += 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let mut s: String = chars[..head].iter().collect();
    s.push_str(ELLIPSIS);
    s.extend(chars[n - tail..].iter());
    (s, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(role: &str, text: &str) -> Value {
        json!({"id": format!("m-{role}-{}", text.len()), "role": role, "parts": [{"type": "text", "text": text}]})
    }

    #[test]
    fn everything_fits() {
        let ms = vec![msg("user", "hello"), msg("assistant", "hi")];
        let (out, used) = fit(ms.clone(), 100);
        assert_eq!(out, ms);
        assert_eq!(used, 3);
    }

    #[test]
    fn newest_turn_first_then_older_turns() {
        let ms = vec![
            msg("user", &"a".repeat(40)),      // 10
            msg("assistant", &"b".repeat(40)), // 10
            msg("user", &"c".repeat(8)),       // 2
            msg("assistant", &"d".repeat(80)), // 20
            msg("assistant", &"e".repeat(8)),  // 2
        ];
        let (out, used) = fit(ms.clone(), 25);
        // newest turn: query (2) + final step (2) + other step (20) = 24; the older turn (20) does not fit
        assert_eq!(out, ms[2..].to_vec());
        assert_eq!(used, 24);
        let (out, _) = fit(ms.clone(), 44);
        assert_eq!(out, ms);
    }

    #[test]
    fn shortens_when_the_newest_turn_alone_is_too_big() {
        let ms = vec![
            msg("user", &"q".repeat(400)),
            msg("assistant", &"r".repeat(400)),
        ];
        let (out, used) = fit(ms, 40);
        assert_eq!(out.len(), 2);
        assert!(used <= 40, "{used}");
        let t = out[0]["parts"][0]["text"].as_str().unwrap();
        assert!(t.contains("\n…\n") && t.starts_with('q') && t.ends_with('q'));
        let tool = json!({"role": "assistant", "parts": [{"type": "tool", "tool_id": "t", "tool_output": "o".repeat(1000)}]});
        let s = shorten(&tool, 20);
        assert_eq!(s["parts"][0]["tool_output_truncated"], true);
        assert_eq!(s["parts"][0]["tool_output_original_chars"], 1000);
        assert!(tokens::estimate_message(&s) <= 20);
    }
}
