//! W3C trace context (`traceparent`) carried in NATS headers, so one tick's trace can be followed hop by
//! hop to the provider call: each hop keeps the trace id and makes a new span id.
//!
//! [`Tracer`] and [`Span`] turn a hop's work into OpenTelemetry spans when OTLP export is on
//! (`[telemetry] otlp_endpoint`, see `crate::telemetry`): the span's own context is what the hop sends
//! on, so the exported parent/child chain and the `traceparent` headers are the same thing. When export
//! is off a span is only the context it would carry, computed exactly as before: no exporter, no
//! allocation.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};
pub use opentelemetry::{KeyValue, Value};

/// A parsed `traceparent`: version 00, 16-byte trace id, 8-byte parent span id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceContext {
    /// Starts a new trace (at the edge: a tick from the exchange, an API request).
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: random_nonzero_u128(),
            span_id: random_nonzero_u64(),
            sampled: true,
        }
    }

    /// The context of the next hop: same trace, new span.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: random_nonzero_u64(),
            sampled: self.sampled,
        }
    }

    /// Parses a `traceparent` header; `None` for anything malformed (a bad header must not fail work).
    pub fn parse(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

impl TraceContext {
    fn to_span_context(self) -> opentelemetry::trace::SpanContext {
        opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from(self.trace_id),
            opentelemetry::trace::SpanId::from(self.span_id),
            opentelemetry::trace::TraceFlags::default().with_sampled(self.sampled),
            true,
            opentelemetry::trace::TraceState::default(),
        )
    }

    fn from_span_context(context: &opentelemetry::trace::SpanContext) -> Option<TraceContext> {
        if !context.is_valid() {
            return None;
        }
        Some(TraceContext {
            trace_id: u128::from_be_bytes(context.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(context.span_id().to_bytes()),
            sampled: context.is_sampled(),
        })
    }
}

/// Makes one service's spans: exported through OTLP when `crate::telemetry::init` installed an
/// exporter, otherwise nothing but the trace context each hop passes on.
#[derive(Clone, Default)]
pub struct Tracer {
    exporting: Option<opentelemetry_sdk::trace::SdkTracer>,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("exporting", &self.exporting.is_some())
            .finish()
    }
}

impl Tracer {
    /// The tracer of `service` (`ingest`, `matcher`, ...): its spans carry that service's name. Export
    /// off (or not started yet) gives [`Tracer::disabled`].
    pub fn for_service(service: &str) -> Tracer {
        crate::telemetry::tracer_for(service)
    }

    /// A tracer that exports nothing.
    pub fn disabled() -> Tracer {
        Tracer { exporting: None }
    }

    pub(crate) fn exporting(tracer: opentelemetry_sdk::trace::SdkTracer) -> Tracer {
        Tracer {
            exporting: Some(tracer),
        }
    }

    pub fn is_exporting(&self) -> bool {
        self.exporting.is_some()
    }

    /// Starts a span of this hop's work under `parent`, the context a message or request carried
    /// (`None`: the work starts a trace).
    pub fn start(&self, name: &'static str, kind: SpanKind, parent: Option<&TraceContext>) -> Span {
        self.start_at(|| Cow::Borrowed(name), kind, parent, None)
    }

    /// [`Tracer::start`] with a name computed only when exporting and, optionally, a start in the
    /// past (work timed before it was known to be worth a span).
    pub fn start_at<N: FnOnce() -> Cow<'static, str>>(
        &self,
        name: N,
        kind: SpanKind,
        parent: Option<&TraceContext>,
        started: Option<SystemTime>,
    ) -> Span {
        let Some(tracer) = &self.exporting else {
            return Span::unexported(kind, parent);
        };
        let name = name();
        let parent_context = match parent {
            Some(parent) => {
                opentelemetry::Context::new().with_remote_span_context(parent.to_span_context())
            }
            None => opentelemetry::Context::new(),
        };
        let mut builder = tracer.span_builder(name).with_kind(kind.clone());
        if let Some(started) = started {
            builder = builder.with_start_time(started);
        }
        let span = tracer.build_with_context(builder, &parent_context);
        match TraceContext::from_span_context(span.span_context()) {
            Some(context) => Span {
                context,
                exported: Some(span),
            },
            // The SDK always gives a valid context; should it not, the hop still carries one.
            None => Span::unexported(kind, parent),
        }
    }
}

/// One hop's unit of work: its context (what the hop sends on) and, when exporting, the OpenTelemetry
/// span ended (and queued for export) when this is dropped.
pub struct Span {
    context: TraceContext,
    exported: Option<opentelemetry_sdk::trace::Span>,
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Span")
            .field("context", &self.context)
            .field("exported", &self.exported.is_some())
            .finish()
    }
}

impl Span {
    /// Without export a span is the context the hop passes on, computed as the hops always did: work
    /// that sends something on (a publish, an HTTP call) gets a new span id in the same trace; work
    /// inside a hop keeps the context it received; nothing received starts a trace.
    fn unexported(kind: SpanKind, parent: Option<&TraceContext>) -> Span {
        let context = match (parent, kind) {
            (Some(parent), SpanKind::Producer | SpanKind::Client) => parent.child(),
            (Some(parent), _) => *parent,
            (None, _) => TraceContext::new_root(),
        };
        Span {
            context,
            exported: None,
        }
    }

    /// The context to send on (`traceparent`) and to log (`trace_id`).
    pub fn context(&self) -> TraceContext {
        self.context
    }

    /// Whether this span is exported (sampled, with export on): worth building attributes for.
    pub fn is_recording(&self) -> bool {
        self.exported
            .as_ref()
            .is_some_and(opentelemetry::trace::Span::is_recording)
    }

    /// Adds the attributes `attributes` builds, calling it only when the span is recorded, so that
    /// building them costs nothing when export is off.
    pub fn set_attributes<I, F>(&mut self, attributes: F)
    where
        F: FnOnce() -> I,
        I: IntoIterator<Item = KeyValue>,
    {
        if let Some(span) = self.exported.as_mut().filter(|span| span.is_recording()) {
            span.set_attributes(attributes());
        }
    }

    /// Marks the span failed with the description `description` builds (only when recorded).
    pub fn set_error<F: FnOnce() -> String>(&mut self, description: F) {
        if let Some(span) = self.exported.as_mut().filter(|span| span.is_recording()) {
            span.set_status(opentelemetry::trace::Status::error(description()));
        }
    }

    /// Ends the span now (dropping it does the same).
    pub fn end(self) {
        drop(self);
    }
}

fn random_nonzero_u128() -> u128 {
    loop {
        let value = uuid::Uuid::new_v4().as_u128();
        if value != 0 {
            return value;
        }
    }
}

fn random_nonzero_u64() -> u64 {
    loop {
        let value = (uuid::Uuid::new_v4().as_u128() >> 64) as u64;
        if value != 0 {
            return value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_children_keep_the_trace() {
        let root = TraceContext::new_root();
        let parsed = TraceContext::parse(&root.to_string()).expect("parses");
        assert_eq!(parsed, root);
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
    }

    #[test]
    fn spans_without_export_carry_the_context_as_the_hops_always_did() {
        let tracer = Tracer::disabled();
        let received = TraceContext::new_root();
        let work = tracer.start("work", SpanKind::Consumer, Some(&received));
        assert_eq!(
            work.context(),
            received,
            "work inside a hop keeps its context"
        );
        assert!(!work.is_recording());
        let publish = tracer.start("publish", SpanKind::Producer, Some(&work.context()));
        assert_eq!(publish.context().trace_id, received.trace_id);
        assert_ne!(publish.context().span_id, received.span_id);
        let root = tracer.start("observe", SpanKind::Internal, None);
        assert_ne!(root.context().trace_id, received.trace_id);
    }

    #[test]
    fn contexts_convert_to_open_telemetry_and_back() {
        let context =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .expect("parses");
        let span_context = context.to_span_context();
        assert_eq!(
            span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span_context.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(
            TraceContext::from_span_context(&span_context),
            Some(context)
        );
    }

    #[test]
    fn rejects_malformed_headers() {
        assert!(TraceContext::parse("garbage").is_none());
        assert!(
            TraceContext::parse("00-00000000000000000000000000000000-0000000000000001-01")
                .is_none()
        );
        assert!(
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .is_some()
        );
    }
}
