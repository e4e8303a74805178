//! The one analyzer used for documents and queries: English words are stemmed (Snowball),
//! code identifiers are kept whole *and* split (`getUserToken` → `getusertoken`, `get`,
//! `user`, `token`; `snake_case` → `snake_case`, `snake`, `case`), and CJK runs (Han, kana,
//! Hangul) become overlapping character bigrams from tantivy's n-gram tokenizer, the usual
//! dictionary-free approach (Lucene's CJK analyzer): a query "认证" matches any text containing
//! it, with no dictionary to download. Text is NFKC-normalised first (fullwidth `ＡＰＩ` and
//! ligatures match their plain spelling), and each emoji is a token of its own.

use std::borrow::Cow;

use rust_stemmers::{Algorithm, Stemmer};
use tantivy::tokenizer::{NgramTokenizer, Token, TokenStream, Tokenizer};
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// Name under which the analyzer is registered with tantivy.
pub const NAME: &str = "longship_text";

/// Words longer than this (bytes) are dropped: base64 blobs and minified code are not words.
const MAX_WORD_BYTES: usize = 64;

#[derive(Clone)]
pub struct TextAnalyzer {
    cjk: NgramTokenizer,
}

impl Default for TextAnalyzer {
    #[allow(
        clippy::expect_used,
        reason = "constant bigram bounds (1 <= 2 <= 2) cannot fail"
    )]
    fn default() -> Self {
        TextAnalyzer {
            // Constant, valid bounds (1 <= min <= max): this cannot fail.
            cjk: NgramTokenizer::new(2, 2, false).expect("bigram bounds are valid"),
        }
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0x20000..=0x2FA1F) // Extensions B..
}

fn is_word(c: char) -> bool {
    (c.is_alphanumeric() || c == '_') && !is_cjk(c)
}

/// Pictographic emoji (one token each). Skin-tone modifiers, variation selectors and joiners
/// are not: `👍🏽` is found by `👍`.
fn is_emoji(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1F3FA    // mahjong, cards, enclosed, pictographs (before the skin tones)
        | 0x1F400..=0x1FAFF  // pictographs, emoticons, transport, supplemental, extended-A
        | 0x2600..=0x27BF    // miscellaneous symbols, dingbats (☀ ✅ ❤)
        | 0x2B00..=0x2BFF    // arrows and stars (⭐)
        | 0x231A..=0x231B | 0x23E9..=0x23FA) // ⌚ ⌛ ⏩..⏺
}

/// `text` in NFKC (borrowed when it already is, as nearly all text is).
fn nfkc(text: &str) -> Cow<'_, str> {
    match is_nfkc_quick(text.chars()) {
        IsNormalized::Yes => Cow::Borrowed(text),
        _ => Cow::Owned(text.nfkc().collect()),
    }
}

impl TextAnalyzer {
    /// Every token of `text`, in order.
    pub fn tokens(&mut self, text: &str) -> Vec<Token> {
        let normalized = nfkc(text);
        let text = normalized.as_ref();
        let stemmer = Stemmer::create(Algorithm::English);
        let mut out = Vec::new();
        let mut chars = text.char_indices().peekable();
        while let Some(&(start, c)) = chars.peek() {
            if is_word(c) {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    if !is_word(c) {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                word_tokens(&stemmer, &text[start..end], start, &mut out);
            } else if is_cjk(c) {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    if !is_cjk(c) {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                self.cjk_tokens(&text[start..end], start, &mut out);
            } else if is_emoji(c) {
                push(&mut out, c.to_string(), start, start + c.len_utf8());
                chars.next();
            } else {
                chars.next();
            }
        }
        for (i, t) in out.iter_mut().enumerate() {
            t.position = i;
        }
        out
    }

    fn cjk_tokens(&mut self, run: &str, offset: usize, out: &mut Vec<Token>) {
        if run.chars().nth(1).is_none() {
            push(out, run.to_string(), offset, offset + run.len());
            return;
        }
        let mut stream = self.cjk.token_stream(run);
        while stream.advance() {
            let t = stream.token();
            push(
                out,
                t.text.clone(),
                offset + t.offset_from,
                offset + t.offset_to,
            );
        }
    }
}

fn push(out: &mut Vec<Token>, text: String, from: usize, to: usize) {
    out.push(Token {
        offset_from: from,
        offset_to: to,
        position: 0,
        text,
        position_length: 1,
    });
}

/// A run of letters, digits and underscores: the stemmed parts, plus the whole identifier
/// (lower-cased, unstemmed) when it has more than one part.
fn word_tokens(stemmer: &Stemmer, word: &str, offset: usize, out: &mut Vec<Token>) {
    if word.len() > MAX_WORD_BYTES {
        return;
    }
    let parts = split_identifier(word);
    if parts.len() > 1 {
        let whole = word.trim_matches('_').to_lowercase();
        if !whole.is_empty() {
            push(out, whole, offset, offset + word.len());
        }
    }
    for (from, to) in parts {
        let lower = word[from..to].to_lowercase();
        let stemmed = stemmer.stem(&lower).into_owned();
        push(out, stemmed, offset + from, offset + to);
    }
}

/// Byte ranges of the parts of an identifier: split at `_`, at lower→upper case changes
/// (`getUser`), at the end of an acronym (`HTTPServer` → `HTTP`, `Server`) and between letters
/// and digits (`utf8` stays whole: digits after letters join them, `v2` too).
fn split_identifier(word: &str) -> Vec<(usize, usize)> {
    let mut parts = Vec::new();
    let chars: Vec<(usize, char)> = word.char_indices().collect();
    let mut start: Option<usize> = None;
    for (k, &(i, c)) in chars.iter().enumerate() {
        if c == '_' {
            if let Some(s) = start.take() {
                parts.push((s, i));
            }
            continue;
        }
        let Some(s) = start else {
            start = Some(i);
            continue;
        };
        let prev = chars[k - 1].1;
        let next = chars.get(k + 1).map(|&(_, c)| c);
        let boundary = (prev.is_lowercase() && c.is_uppercase())
            || (prev.is_uppercase() && c.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
            || (prev.is_numeric()
                && c.is_alphabetic()
                && k >= 2
                && !chars[k - 2].1.is_alphabetic());
        if boundary {
            parts.push((s, i));
            start = Some(i);
        }
    }
    if let Some(s) = start {
        parts.push((s, word.len()));
    }
    parts
}

/// tantivy's view of the analyzer: tokens computed up front, then streamed.
pub struct VecTokenStream {
    tokens: Vec<Token>,
    index: usize,
}

impl TokenStream for VecTokenStream {
    fn advance(&mut self) -> bool {
        if self.index < self.tokens.len() {
            self.index += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self
            .index
            .saturating_sub(1)
            .min(self.tokens.len().saturating_sub(1))]
    }

    fn token_mut(&mut self) -> &mut Token {
        let i = self
            .index
            .saturating_sub(1)
            .min(self.tokens.len().saturating_sub(1));
        &mut self.tokens[i]
    }
}

impl Tokenizer for TextAnalyzer {
    type TokenStream<'a> = VecTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream {
        VecTokenStream {
            tokens: self.tokens(text),
            index: 0,
        }
    }
}

/// The distinct terms of a query, in first-seen order.
pub fn query_terms(text: &str, max_terms: usize) -> Vec<String> {
    let mut analyzer = TextAnalyzer::default();
    let mut seen = std::collections::HashSet::new();
    analyzer
        .tokens(text)
        .into_iter()
        .map(|t| t.text)
        .filter(|t| seen.insert(t.clone()))
        .take(max_terms)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<String> {
        TextAnalyzer::default()
            .tokens(s)
            .into_iter()
            .map(|t| t.text)
            .collect()
    }

    #[test]
    fn english_is_stemmed() {
        assert_eq!(texts("Running tokens"), vec!["run", "token"]);
    }

    #[test]
    fn identifiers_split_and_whole() {
        assert_eq!(
            texts("getUserToken"),
            vec!["getusertoken", "get", "user", "token"]
        );
        assert_eq!(texts("snake_case"), vec!["snake_case", "snake", "case"]);
        assert_eq!(texts("HTTPServer"), vec!["httpserver", "http", "server"]);
        assert_eq!(texts("utf8"), vec!["utf8"]);
    }

    #[test]
    fn cjk_bigrams() {
        assert_eq!(texts("用户认证"), vec!["用户", "户认", "认证"]);
        assert_eq!(texts("认"), vec!["认"]);
        assert_eq!(texts("API认证flow"), vec!["api", "认证", "flow"]);
        assert_eq!(texts("ログイン"), vec!["ログ", "グイ", "イン"]);
    }

    #[test]
    fn nfkc_and_emoji() {
        assert_eq!(texts("ＡＰＩ　Ｔｏｋｅｎ"), texts("API Token"));
        assert_eq!(texts("ﬁle"), texts("file"));
        assert_eq!(texts("deploy 🚀 now"), vec!["deploy", "🚀", "now"]);
        assert_eq!(texts("👍🏽✅"), vec!["👍", "✅"]);
        assert_eq!(texts("ｶﾀｶﾅ"), texts("カタカナ"));
    }

    #[test]
    fn query_language_characters_are_text() {
        assert_eq!(
            query_terms("\"auth\" AND title:(x*) [y]", 10),
            vec!["auth", "and", "titl", "x", "y"]
        );
        assert!(query_terms("*** :: \"\"", 10).is_empty());
        let long = "a".repeat(100);
        assert!(query_terms(&long, 10).is_empty());
    }
}
