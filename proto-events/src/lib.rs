//! The CoinAlarm event contract: every event type, its envelope, subjects, stream names, message ids and
//! schema versions. Everything that crosses a service boundary is defined here and nowhere else.

pub mod domain;
pub mod envelope;
pub mod events;
pub mod ids;
pub mod markets;
pub mod schema;
pub mod site;
pub mod subjects;
pub mod version;

pub use envelope::{
    DecodeError, DecodeErrorKind, Envelope, decode, decode_as, decode_value, encode, header,
};
pub use events::{Event, EventData, EventPayload, EventType, Routed};
pub use ids::{DispatchId, Firing, MessageId, TriggerId};
pub use site::Site;
pub use subjects::{Category, Priority};
