//! How long an SMS text is on the air: its encoding (GSM-7 or UCS-2) and how many segments it takes.
//!
//! A text in the GSM 03.38 alphabet travels as 7-bit septets: 160 in a single SMS, 153 per segment once
//! concatenated (the user data header takes the rest). Anything else — Korean always — travels as UCS-2:
//! 70 UTF-16 units single, 67 per segment concatenated. Extension-table characters (`€ [ ] { } ~ ^ \ |`)
//! cost two septets, and neither an escape pair nor a surrogate pair is split across segments, as
//! handsets and carriers do it.

/// Characters of the GSM 03.38 default alphabet (one septet each).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// Characters of the GSM 03.38 extension table (escape + one septet each).
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

const GSM7_SINGLE: usize = 160;
const GSM7_CONCATENATED: usize = 153;
const UCS2_SINGLE: usize = 70;
const UCS2_CONCATENATED: usize = 67;

/// How a text is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
        }
    }
}

/// The size of a text as an SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsSize {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    /// Segments billed; an empty text still takes one.
    pub segments: u32,
}

/// Measures `text`: GSM-7 when every character is in the GSM alphabet, UCS-2 otherwise.
pub fn measure(text: &str) -> SmsSize {
    let septets: Option<Vec<usize>> = text.chars().map(gsm7_septets).collect();
    match septets {
        Some(widths) => SmsSize {
            encoding: Encoding::Gsm7,
            units: widths.iter().sum(),
            segments: segments(&widths, GSM7_SINGLE, GSM7_CONCATENATED),
        },
        None => {
            let widths: Vec<usize> = text.chars().map(char::len_utf16).collect();
            SmsSize {
                encoding: Encoding::Ucs2,
                units: widths.iter().sum(),
                segments: segments(&widths, UCS2_SINGLE, UCS2_CONCATENATED),
            }
        }
    }
}

fn gsm7_septets(character: char) -> Option<usize> {
    if GSM7_BASIC.contains(character) {
        Some(1)
    } else if GSM7_EXTENSION.contains(character) {
        Some(2)
    } else {
        None
    }
}

/// Packs characters of the given widths into segments without splitting a character.
fn segments(widths: &[usize], single: usize, per_segment: usize) -> u32 {
    let total: usize = widths.iter().sum();
    if total <= single {
        return 1;
    }
    let mut count: u32 = 1;
    let mut used = 0;
    for &width in widths {
        if used + width > per_segment {
            count += 1;
            used = 0;
        }
        used += width;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn gsm7_limits() {
        assert_eq!(
            measure(""),
            SmsSize {
                encoding: Encoding::Gsm7,
                units: 0,
                segments: 1
            }
        );
        assert_eq!(measure(&"a".repeat(160)).segments, 1);
        assert_eq!(measure(&"a".repeat(161)).segments, 2);
        assert_eq!(measure(&"a".repeat(306)).segments, 2);
        assert_eq!(measure(&"a".repeat(307)).segments, 3);
        let newline = measure("[CoinAlarm] Bitcoin\n95,000,000 KRW @ 14:03");
        assert_eq!(newline.encoding, Encoding::Gsm7);
    }

    #[test]
    fn extension_characters_take_two_septets_and_are_not_split() {
        let euros = measure(&"€".repeat(80));
        assert_eq!(
            (euros.encoding, euros.units, euros.segments),
            (Encoding::Gsm7, 160, 1)
        );
        assert_eq!(measure(&"€".repeat(81)).segments, 2);
        // 152 plain septets then an escape pair: the pair does not fit the first segment's last septet.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(10));
        let size = measure(&text);
        assert_eq!(size.units, 164);
        assert_eq!(size.segments, 2);
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(151));
        assert_eq!((measure(&text).units, measure(&text).segments), (305, 2));
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!((measure(&text).units, measure(&text).segments), (306, 3));
    }

    #[test]
    fn korean_is_ucs2() {
        let size = measure("[코인알람] 비트코인");
        assert_eq!(size.encoding, Encoding::Ucs2);
        assert_eq!(size.units, 11);
        assert_eq!(measure(&"가".repeat(70)).segments, 1);
        assert_eq!(measure(&"가".repeat(71)).segments, 2);
        assert_eq!(measure(&"가".repeat(134)).segments, 2);
        assert_eq!(measure(&"가".repeat(135)).segments, 3);
    }

    #[test]
    fn one_non_gsm_character_switches_the_whole_text_to_ucs2() {
        let size = measure(&format!("{}±", "a".repeat(100)));
        assert_eq!(size.encoding, Encoding::Ucs2);
        assert_eq!(size.units, 101);
        assert_eq!(size.segments, 2);
    }

    #[test]
    fn surrogate_pairs_are_not_split() {
        let emoji = measure(&"😀".repeat(35));
        assert_eq!((emoji.units, emoji.segments), (70, 1));
        // 66 units then a pair: the pair starts the second segment.
        let text = format!("{}😀{}", "가".repeat(66), "가".repeat(3));
        assert_eq!(measure(&text).units, 71);
        assert_eq!(measure(&text).segments, 2);
    }
}
