//! The one spelling of a username, and the key that makes look-alike names one name.
//!
//! A name is trimmed, normalised with NFKC and case-folded (so `Alice`, fullwidth `ａｌｉｃｅ`
//! and mathematical bold `𝐚𝐥𝐢𝐜𝐞` are all `alice`); control and invisible characters are
//! refused, and so is a name that mixes scripts with letters confusable across them (Cyrillic
//! `а` among Latin letters), and letters outside UTS #39's identifier profile (small capitals
//! `ᴀʟɪᴄᴇ`). Names that still look alike (dotless `ı`, a whole-script Cyrillic look-alike) share
//! a [`look_alike_key`]: the UTS #39 skeleton, folded again. The store keeps the key unique, so
//! two accounts can never look the same.

use unicode_normalization::UnicodeNormalization;
use unicode_security::{
    GeneralSecurityProfile, MixedScript, is_potential_mixed_script_confusable_char, skeleton,
};

pub const MAX_USERNAME_CHARS: usize = 128;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("username: 1-{MAX_USERNAME_CHARS} characters")]
    Length,
    #[error("username: no control or invisible characters")]
    Invisible,
    #[error("username: mixes scripts with letters that look alike across them")]
    MixedScript,
    #[error(
        "username: uses a letter form that is not for names (small capitals, phonetic or historic letters)"
    )]
    RestrictedLetter,
}

/// Trimmed, NFKC, case-folded, checked.
pub fn normalize(raw: &str) -> Result<String, UsernameError> {
    let name = fold(raw.trim());
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_USERNAME_CHARS {
        return Err(UsernameError::Length);
    }
    if name.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(UsernameError::Invisible);
    }
    // UTS #39's identifier profile, for letters: small capitals and the like mimic ordinary
    // letters without being them. Punctuation and symbols (`.`, `@`, `-`) stay allowed.
    if name
        .chars()
        .any(|c| c.is_alphabetic() && !c.identifier_allowed())
    {
        return Err(UsernameError::RestrictedLetter);
    }
    if !name.as_str().is_single_script()
        && name.chars().any(is_potential_mixed_script_confusable_char)
    {
        return Err(UsernameError::MixedScript);
    }
    Ok(name)
}

/// NFKC and lower case until stable (lower-casing can denormalise, as NFKC can un-fold).
fn fold(s: &str) -> String {
    let once: String = s.nfkc().collect::<String>().to_lowercase().nfkc().collect();
    once.to_lowercase()
}

/// Two names with the same key look alike: the UTS #39 skeleton of the normalised name, folded
/// again (skeletons map small capitals to capitals).
pub fn look_alike_key(normalized: &str) -> String {
    fold(&skeleton(normalized).collect::<String>())
}

/// Unicode's Default_Ignorable_Code_Point set: characters that render as nothing.
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility_forms_and_case_are_one_name() {
        for spelling in [
            "alice",
            " Alice ",
            "ALICE",
            "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}", // fullwidth
            "\u{1d41a}\u{1d425}\u{1d422}\u{1d41c}\u{1d41e}", // mathematical bold
        ] {
            assert_eq!(normalize(spelling).unwrap(), "alice", "{spelling:?}");
        }
        // Composed and decomposed accents are one name.
        assert_eq!(
            normalize("Jose\u{301}").unwrap(),
            normalize("José").unwrap()
        );
    }

    #[test]
    fn look_alikes_share_a_key() {
        let alice = look_alike_key(&normalize("alice").unwrap());
        for look_alike in [
            "al\u{131}ce",                         // dotless i
            "\u{430}\u{4cf}\u{456}\u{441}\u{435}", // Cyrillic, every letter
        ] {
            let name = normalize(look_alike).unwrap();
            assert_eq!(look_alike_key(&name), alice, "{look_alike:?} -> {name:?}");
        }
        assert_ne!(look_alike_key("bob"), alice);
    }

    #[test]
    fn mixed_script_look_alikes_and_invisible_characters_are_refused() {
        // Cyrillic а among Latin letters.
        assert_eq!(normalize("\u{430}lice"), Err(UsernameError::MixedScript));
        assert_eq!(normalize("ali\u{200b}ce"), Err(UsernameError::Invisible));
        // Small capitals.
        assert_eq!(
            normalize("\u{1d00}\u{29f}\u{26a}\u{1d04}\u{1d07}"),
            Err(UsernameError::RestrictedLetter)
        );
        assert_eq!(normalize("   "), Err(UsernameError::Length));
        // One script, or scripts that are not confusable, are fine.
        assert!(normalize("мария").is_ok());
        assert!(normalize("山田太郎").is_ok());
        assert!(normalize("alice.smith-2").is_ok());
        assert!(normalize("alice@example.com").is_ok());
        assert!(normalize("çağrı").is_ok());
    }
}
