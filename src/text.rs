//! Character classes shared by the search analyzer and the ingestion splitter.

/// Han, kana and Hangul: scripts written without spaces between words, so the analyzer cuts
/// them into bigrams and the splitter counts them as a token per character.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0x20000..=0x2FA1F) // Extensions B..
}

#[cfg(test)]
mod tests {
    use super::is_cjk;

    #[test]
    fn scripts_without_spaces_are_cjk() {
        for c in ['中', 'ひ', 'カ', '한', '𠀀'] {
            assert!(is_cjk(c), "{c}");
        }
        for c in ['a', 'é', '1', ' ', '🚀'] {
            assert!(!is_cjk(c), "{c}");
        }
    }
}
