//! The text tokenizer of multimodal runs: Chinese and English (and any mix) without a
//! pre-trained vocabulary.
//!
//! Text is normalised (full-width ASCII folded to ASCII, lower case), then split into
//! tokens: every CJK character (Han, kana, Hangul) is a token and so is every pair of
//! adjacent CJK characters (Chinese has no spaces, so character bigrams stand in for
//! words), and every run of other letters and digits is one word token. The vocabulary is
//! built from the training split (tokens seen at least `min_count` times, the most
//! frequent first, at most `max_size`), saved with the model as `tokenizer.json`, and
//! ids 0 and 1 are padding and unknown. It owns tokenising and the vocabulary file only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const PAD: i64 = 0;
pub const UNK: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a tokenizer file: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The vocabulary and how text is cut into ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tokenizer {
    pub kind: String,
    pub version: u32,
    /// Token ids per text (longer texts are cut).
    pub max_len: usize,
    /// `tokens[id]`; 0 is `<pad>`, 1 is `<unk>`.
    pub tokens: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, i64>,
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // hiragana, katakana
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // compatibility ideographs
        | 0x20000..=0x2FA1F) // extensions B–F, supplement
}

/// Full-width ASCII to ASCII, the ideographic space to a space, lower case.
fn normalise(c: char) -> char {
    let c = match c as u32 {
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        _ => c,
    };
    c.to_lowercase().next().unwrap_or(c)
}

/// The tokens of `text`, in order.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut word = String::new();
    let mut prev_cjk: Option<char> = None;
    for c in text.chars().map(normalise) {
        if is_cjk(c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            out.push(c.to_string());
            if let Some(p) = prev_cjk {
                out.push(format!("{p}{c}"));
            }
            prev_cjk = Some(c);
        } else if c.is_alphanumeric() {
            prev_cjk = None;
            word.push(c);
        } else {
            prev_cjk = None;
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

impl Tokenizer {
    /// The vocabulary of `texts`: tokens seen at least `min_count` times, most frequent
    /// first (ties in code point order), at most `max_size` including `<pad>` and `<unk>`.
    pub fn build<'a>(
        texts: impl IntoIterator<Item = &'a str>,
        min_count: usize,
        max_size: usize,
        max_len: usize,
    ) -> Tokenizer {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for t in texts {
            for tok in tokens(t) {
                *counts.entry(tok).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(_, n)| *n >= min_count.max(1))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut vocab = vec!["<pad>".to_owned(), "<unk>".to_owned()];
        vocab.extend(
            ranked
                .into_iter()
                .take(max_size.saturating_sub(2))
                .map(|(t, _)| t),
        );
        Tokenizer::from_tokens(vocab, max_len)
    }

    fn from_tokens(tokens: Vec<String>, max_len: usize) -> Tokenizer {
        let index = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as i64))
            .collect();
        Tokenizer {
            kind: "pmv-data-tokenizer".into(),
            version: 1,
            max_len,
            tokens,
            index,
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.len() <= 2
    }

    /// The ids of `text`, at most `max_len` (not padded).
    pub fn encode(&self, text: &str) -> Vec<i64> {
        tokens(text)
            .into_iter()
            .take(self.max_len)
            .map(|t| self.index.get(&t).copied().unwrap_or(UNK))
            .collect()
    }

    /// The file's bytes (JSON), as saved with the model.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn load(path: &Path) -> Result<Tokenizer, TokenizerError> {
        let bytes = fs_err::read(path).map_err(|source| TokenizerError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|message| TokenizerError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Tokenizer, String> {
        let t: Tokenizer = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if t.kind != "pmv-data-tokenizer" || t.version != 1 {
            return Err(format!("kind {:?} version {}", t.kind, t.version));
        }
        if t.tokens.len() < 2 || t.tokens[0] != "<pad>" || t.tokens[1] != "<unk>" {
            return Err("the vocabulary does not start with <pad>, <unk>".into());
        }
        Ok(Tokenizer::from_tokens(t.tokens, t.max_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_english_and_mixed_text() {
        assert_eq!(
            tokens("香港城市 B-Roll，ＨＫ 2017!"),
            vec![
                "香", "港", "香港", "城", "港城", "市", "城市", "b", "roll", "hk", "2017"
            ]
        );
        assert_eq!(
            tokens(" Hong Kong Circa 2017, City B-Roll"),
            vec!["hong", "kong", "circa", "2017", "city", "b", "roll"]
        );
        assert_eq!(
            tokens("日本語テキストand한국어"),
            tokens("日本語テキスト and 한국어")
        );
        let t = Tokenizer::build(["天空 sky", "天空 city", "海 sky"], 2, 100, 4);
        assert_eq!(t.tokens, vec!["<pad>", "<unk>", "sky", "天", "天空", "空"]);
        assert_eq!(t.encode("天空 night sky 天"), vec![3, 5, 4, UNK]);
        let back = Tokenizer::from_bytes(&t.to_bytes()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.encode("sky"), vec![2]);
        assert!(Tokenizer::from_bytes(b"{}").is_err());
    }
}
