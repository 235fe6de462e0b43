//! Recorded feeds: cryptofeed's capture format (one frame per line, `<unix time>: b'<json>'`, after a
//! header naming the connection and the request sent), played back at original speed, N times faster,
//! or as fast as the consumer takes frames.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use coinalarm_runtime::Shutdown;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::mpsc;

use crate::frame::{Frame, parse_frame};

/// The vendored capture of one Upbit session (`data/upbit/`, MIT, see the README there): 304 trades and
/// 145 order book frames over 10 markets, SIMPLE format.
pub const VENDORED_UPBIT: &str = include_str!("../../../data/upbit/cryptofeed-UPBIT.ws.62.0.txt");

/// One recorded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFrame {
    /// 1-based line in the file, for error messages.
    pub line: usize,
    /// When the recorder received it.
    pub received_at: Timestamp,
    /// The frame as the exchange sent it (JSON text).
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: {problem}")]
    Line { line: usize, problem: &'static str },
    #[error("the recording holds no frames")]
    Empty,
}

/// Parses a capture. Lines that do not start with a digit (the connection and request header, blank
/// lines) are skipped; a line that starts like a frame but is malformed is an error.
pub fn parse_recording(text: &str) -> Result<Vec<RecordedFrame>, RecordingError> {
    let mut frames = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim_end();
        if !line.starts_with(|character: char| character.is_ascii_digit()) {
            continue;
        }
        let problem = |problem| RecordingError::Line {
            line: number,
            problem,
        };
        let (time, literal) = line
            .split_once(": ")
            .ok_or_else(|| problem("expected `<unix time>: b'<frame>'`"))?;
        let received_at = parse_unix_time(time).ok_or_else(|| problem("bad unix time"))?;
        let bytes = python_bytes_literal(literal)
            .ok_or_else(|| problem("the frame is not a Python bytes literal"))?;
        let body = String::from_utf8(bytes).map_err(|_| problem("the frame is not UTF-8"))?;
        frames.push(RecordedFrame {
            line: number,
            received_at,
            body,
        });
    }
    if frames.is_empty() {
        return Err(RecordingError::Empty);
    }
    Ok(frames)
}

/// Reads and parses a capture file.
pub fn read_recording(path: &Path) -> Result<Vec<RecordedFrame>, RecordingError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecordingError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_recording(&text)
}

/// The vendored Upbit capture, parsed.
pub fn vendored_upbit() -> Vec<RecordedFrame> {
    // The vendored text is fixed at compile time; `tests::the_vendored_capture_parses` proves it parses.
    parse_recording(VENDORED_UPBIT).unwrap_or_default()
}

/// `1618678263.010785` → a timestamp, exactly (no float).
fn parse_unix_time(text: &str) -> Option<Timestamp> {
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    if seconds.is_empty()
        || fraction.len() > 9
        || !seconds.bytes().all(|byte| byte.is_ascii_digit())
        || !fraction.bytes().all(|byte| byte.is_ascii_digit())
    {
        return None;
    }
    let seconds: i64 = seconds.parse().ok()?;
    let nanoseconds: i32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    Timestamp::new(seconds, nanoseconds).ok()
}

/// Decodes a Python `bytes` repr (`b'...'` or `b"..."`) with its escapes.
fn python_bytes_literal(literal: &str) -> Option<Vec<u8>> {
    let inner = literal
        .strip_prefix("b'")
        .and_then(|rest| rest.strip_suffix('\''))
        .or_else(|| {
            literal
                .strip_prefix("b\"")
                .and_then(|rest| rest.strip_suffix('"'))
        })?;
    let mut bytes = Vec::with_capacity(inner.len());
    let mut input = inner.bytes();
    while let Some(byte) = input.next() {
        if byte != b'\\' {
            bytes.push(byte);
            continue;
        }
        let escaped = match input.next()? {
            b'\\' => b'\\',
            b'\'' => b'\'',
            b'"' => b'"',
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'x' => {
                let high = char::from(input.next()?).to_digit(16)?;
                let low = char::from(input.next()?).to_digit(16)?;
                u8::try_from(high * 16 + low).ok()?
            }
            _ => return None,
        };
        bytes.push(escaped);
    }
    Some(bytes)
}

/// How fast to play a recording.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Speed {
    /// With the recorded gaps between frames.
    #[default]
    Original,
    /// Gaps divided by this factor (`10` plays ten times faster).
    Times(f64),
    /// No gaps: as fast as the consumer takes frames.
    Fastest,
}

impl Speed {
    /// How long after the first frame `frame` is due, for a recording starting at `first`.
    pub fn offset(self, first: Timestamp, frame: Timestamp) -> Duration {
        let recorded = Duration::try_from(frame.duration_since(first)).unwrap_or(Duration::ZERO);
        match self {
            Speed::Original => recorded,
            Speed::Times(factor) => recorded.div_f64(factor),
            Speed::Fastest => Duration::ZERO,
        }
    }

    pub fn parse(text: &str) -> Result<Speed, String> {
        let text = text.trim();
        match text.to_ascii_lowercase().as_str() {
            "original" | "1" | "1x" => return Ok(Speed::Original),
            "max" | "fastest" | "asap" => return Ok(Speed::Fastest),
            _ => {}
        }
        let number = text.strip_suffix(['x', 'X']).unwrap_or(text);
        match number.parse::<f64>() {
            Ok(factor) => Speed::from_factor(factor),
            Err(_) => Err(format!(
                "{text:?} is not a speed: expected \"original\", \"max\" or a factor such as 10"
            )),
        }
    }

    fn from_factor(factor: f64) -> Result<Speed, String> {
        if factor.is_finite() && factor > 0.0 {
            Ok(if factor == 1.0 {
                Speed::Original
            } else {
                Speed::Times(factor)
            })
        } else {
            Err(format!("speed factor {factor} must be a positive number"))
        }
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Original => formatter.write_str("original"),
            Speed::Times(factor) => write!(formatter, "{factor}x"),
            Speed::Fastest => formatter.write_str("max"),
        }
    }
}

impl Serialize for Speed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Speed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Spelling {
            Factor(f64),
            Text(String),
        }
        match Spelling::deserialize(deserializer)? {
            Spelling::Factor(factor) => Speed::from_factor(factor),
            Spelling::Text(text) => Speed::parse(&text),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// What a playback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlayReport {
    pub frames: u64,
    pub trades: u64,
    pub invalid: u64,
    /// Shutdown (or a closed receiver) stopped it before the end.
    pub stopped_early: bool,
}

/// Plays `frames` once into `sink`, paced by `speed`, parsing each frame as a live one would be.
pub async fn play(
    frames: &[RecordedFrame],
    speed: Speed,
    sink: &mpsc::Sender<Frame>,
    shutdown: &Shutdown,
) -> PlayReport {
    let mut report = PlayReport::default();
    let Some(first) = frames.first().map(|frame| frame.received_at) else {
        return report;
    };
    let started = tokio::time::Instant::now();
    for recorded in frames {
        if shutdown.is_triggered() {
            report.stopped_early = true;
            return report;
        }
        if speed != Speed::Fastest {
            let due = started + speed.offset(first, recorded.received_at);
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = shutdown.wait() => {
                    report.stopped_early = true;
                    return report;
                }
            }
        }
        report.frames += 1;
        let frame = match parse_frame(recorded.body.as_bytes()) {
            Ok(frame) => frame,
            Err(error) => {
                report.invalid += 1;
                metrics::counter!("coinalarm_ingest_invalid_frames_total", "reason" => error.reason())
                    .increment(1);
                tracing::warn!(line = recorded.line, %error, "recorded frame skipped");
                continue;
            }
        };
        metrics::counter!("coinalarm_ingest_frames_total", "source" => "recorded", "type" => frame.kind_label())
            .increment(1);
        if matches!(frame, Frame::Trade(_)) {
            report.trades += 1;
        }
        if sink.send(frame).await.is_err() {
            report.stopped_early = true;
            return report;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn the_vendored_capture_parses() {
        let frames = parse_recording(VENDORED_UPBIT).unwrap();
        assert_eq!(frames.len(), 449);
        assert_eq!(vendored_upbit().len(), 449);
        // Line 1 is the connection, line 2 the request; frames start at line 3.
        assert_eq!(frames[0].line, 3);
        assert_eq!(
            frames[0].received_at,
            Timestamp::new(1_618_678_263, 10_785_000).unwrap()
        );
        assert!(
            frames[0]
                .body
                .starts_with(r#"{"ty":"trade","cd":"KRW-LAMB""#)
        );
    }

    #[test]
    fn every_recorded_frame_parses() {
        let mut trades = 0;
        let mut other = 0;
        for recorded in vendored_upbit() {
            match parse_frame(recorded.body.as_bytes()) {
                Ok(Frame::Trade(trade)) => {
                    trades += 1;
                    // Every derived change is representable.
                    trade.signed_change_rate().unwrap();
                    trade.signed_change_price().unwrap();
                }
                Ok(Frame::Other { kind }) => {
                    assert_eq!(kind, "orderbook");
                    other += 1;
                }
                Ok(frame) => panic!("line {}: unexpected {frame:?}", recorded.line),
                Err(error) => panic!("line {}: {error}", recorded.line),
            }
        }
        assert_eq!((trades, other), (304, 145));
    }

    #[test]
    fn bytes_literals_and_times() {
        assert_eq!(
            python_bytes_literal(r"b'a\'b\\c\x41\n'").unwrap(),
            b"a'b\\cA\n".to_vec()
        );
        assert_eq!(python_bytes_literal("b\"x\"").unwrap(), b"x".to_vec());
        assert!(python_bytes_literal("'x'").is_none());
        assert!(python_bytes_literal(r"b'\q'").is_none());
        assert_eq!(
            parse_unix_time("1618678292.7775092"),
            Some(Timestamp::new(1_618_678_292, 777_509_200).unwrap())
        );
        assert_eq!(parse_unix_time("12"), Some(Timestamp::new(12, 0).unwrap()));
        assert_eq!(parse_unix_time("1.2.3"), None);
        assert_eq!(parse_unix_time("-1"), None);
    }

    #[test]
    fn malformed_frame_lines_are_errors_and_headers_are_skipped() {
        assert!(matches!(
            parse_recording("wss://x <-> 1\n\n"),
            Err(RecordingError::Empty)
        ));
        assert!(matches!(
            parse_recording("wss://x\n1618678263.0: {\"ty\":1}\n"),
            Err(RecordingError::Line { line: 2, .. })
        ));
        let frames = parse_recording("header\n5.5: b'{}'\n6: b'{}'\n").unwrap();
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn speeds() {
        let first = Timestamp::new(100, 0).unwrap();
        let later = Timestamp::new(110, 500_000_000).unwrap();
        assert_eq!(
            Speed::Original.offset(first, later),
            Duration::from_millis(10_500)
        );
        assert_eq!(
            Speed::Times(10.0).offset(first, later),
            Duration::from_millis(1_050)
        );
        assert_eq!(Speed::Fastest.offset(first, later), Duration::ZERO);
        // A frame recorded before the first (clock step) is due at once.
        assert_eq!(Speed::Original.offset(later, first), Duration::ZERO);
        for (text, speed) in [
            ("original", Speed::Original),
            ("1", Speed::Original),
            ("max", Speed::Fastest),
            ("fastest", Speed::Fastest),
            ("10", Speed::Times(10.0)),
            ("2.5x", Speed::Times(2.5)),
        ] {
            assert_eq!(Speed::parse(text), Ok(speed), "{text}");
        }
        for bad in ["0", "-2", "fast", "inf", "NaN"] {
            assert!(Speed::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::from_str::<Speed>("10").unwrap(),
            Speed::Times(10.0)
        );
        assert_eq!(
            serde_json::from_str::<Speed>("\"max\"").unwrap(),
            Speed::Fastest
        );
        assert_eq!(serde_json::to_string(&Speed::Times(4.0)).unwrap(), "\"4x\"");
        assert_eq!(
            serde_json::from_str::<Speed>(&serde_json::to_string(&Speed::Times(4.0)).unwrap())
                .unwrap(),
            Speed::Times(4.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn playback_keeps_the_recorded_pace_and_counts() {
        let frames = vendored_upbit();
        let (sender, mut receiver) = mpsc::channel(1024);
        let shutdown = Shutdown::new();
        let started = tokio::time::Instant::now();
        let report = play(&frames, Speed::Times(10.0), &sender, &shutdown).await;
        let elapsed = started.elapsed();
        assert_eq!(
            report,
            PlayReport {
                frames: 449,
                trades: 304,
                invalid: 0,
                stopped_early: false
            }
        );
        let recorded = frames
            .last()
            .unwrap()
            .received_at
            .duration_since(frames[0].received_at);
        let expected = Duration::try_from(recorded).unwrap().div_f64(10.0);
        // Paused time advances exactly to each deadline.
        assert!(
            elapsed >= expected && elapsed < expected + Duration::from_millis(5),
            "{elapsed:?} vs {expected:?}"
        );
        let mut received = 0;
        while receiver.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, 449);
    }

    #[tokio::test]
    async fn playback_stops_on_shutdown() {
        let frames = vendored_upbit();
        let (sender, _receiver) = mpsc::channel(1024);
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let report = play(&frames, Speed::Original, &sender, &shutdown).await;
        assert!(report.stopped_early);
        assert_eq!(report.frames, 0);
    }
}
