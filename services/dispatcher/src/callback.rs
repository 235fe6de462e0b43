//! The status-callback URL the dispatcher hands the provider with each SMS. Its query says which
//! dispatch, attempt and provider the callback is about, so the API's callback endpoint can record
//! `DispatchDelivered` / `DispatchUndelivered` without looking anything up. The provider signs the
//! whole URL, query included, so these values are covered by `X-Twilio-Signature`.

use proto_events::DispatchId;
use proto_events::domain::ProviderName;
use url::Url;

const DISPATCH_ID: &str = "dispatch_id";
const ATTEMPT: &str = "attempt";
const PROVIDER: &str = "provider";

/// What one status callback refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackTarget {
    pub dispatch_id: DispatchId,
    /// The attempt whose provider message this is (1-based).
    pub attempt: u32,
    pub provider: ProviderName,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("status callback URL has no {0} parameter")]
    Missing(&'static str),
    #[error("status callback URL has an invalid {name}: {value:?}")]
    Invalid { name: &'static str, value: String },
}

impl CallbackTarget {
    /// `base` with this target's parameters added to its query (existing parameters are kept).
    pub fn url(&self, base: &Url) -> Url {
        let mut url = base.clone();
        url.query_pairs_mut()
            .append_pair(DISPATCH_ID, self.dispatch_id.as_str())
            .append_pair(ATTEMPT, &self.attempt.to_string())
            .append_pair(PROVIDER, self.provider.as_str());
        url
    }

    /// Reads the target back from the URL a callback arrived at.
    pub fn from_url(url: &Url) -> Result<CallbackTarget, Error> {
        let find = |name: &'static str| {
            url.query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
                .ok_or(Error::Missing(name))
        };
        let dispatch_text = find(DISPATCH_ID)?;
        let dispatch_id = DispatchId::parse(&dispatch_text).map_err(|_| Error::Invalid {
            name: DISPATCH_ID,
            value: dispatch_text,
        })?;
        let attempt_text = find(ATTEMPT)?;
        let attempt = attempt_text
            .parse::<u32>()
            .ok()
            .filter(|attempt| *attempt >= 1)
            .ok_or(Error::Invalid {
                name: ATTEMPT,
                value: attempt_text,
            })?;
        let provider_text = find(PROVIDER)?;
        let provider = ProviderName::parse(&provider_text).map_err(|_| Error::Invalid {
            name: PROVIDER,
            value: provider_text,
        })?;
        Ok(CallbackTarget {
            dispatch_id,
            attempt,
            provider,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip_through_the_url() {
        let target = CallbackTarget {
            dispatch_id: DispatchId::parse("dsp-0123456789abcdef0123456789abcdef").unwrap(),
            attempt: 3,
            provider: ProviderName::parse("twilio").unwrap(),
        };
        let base = Url::parse("https://api.example.com/v1/twilio/status?site=cloud").unwrap();
        let url = target.url(&base);
        assert_eq!(
            url.as_str(),
            "https://api.example.com/v1/twilio/status?site=cloud&dispatch_id=dsp-0123456789abcdef0123456789abcdef&attempt=3&provider=twilio"
        );
        assert_eq!(CallbackTarget::from_url(&url), Ok(target));
        assert_eq!(
            CallbackTarget::from_url(&base),
            Err(Error::Missing("dispatch_id"))
        );
        let zero = Url::parse(
            "https://x/s?dispatch_id=dsp-0123456789abcdef0123456789abcdef&attempt=0&provider=t",
        )
        .unwrap();
        assert!(matches!(
            CallbackTarget::from_url(&zero),
            Err(Error::Invalid {
                name: "attempt",
                ..
            })
        ));
    }
}
