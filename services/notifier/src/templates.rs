//! SMS texts in Korean and English: one per alert kind, a combined text for coalesced firings, and the
//! sign-in code. Every text is fitted into a segment budget by dropping optional parts in a fixed order —
//! the time, then the market's alias (the English name in Korean texts, the market code in English ones),
//! then the reference (target or threshold) and the scheduled report's changes — and never the price.
//! A text still over budget at its shortest is sent as it is (and counted): a price is worth a segment.

use std::fmt::Write as _;
use std::ops::Range;

use jiff::tz::TimeZone;
use proto_events::domain::{Locale, MarketCode};
use proto_events::events::{AlertCondition, ChangeBasis, Direction, ObservedPrice, TriggerFired};
use proto_events::ids::Firing;
use proto_events::markets::Catalogue;

use crate::format;
use crate::sms::{self, SmsSize};

/// How much a text says; tried in this order until the text fits the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Detail {
    Full,
    WithoutTime,
    WithoutAlias,
    Minimal,
}

impl Detail {
    pub const ALL: [Detail; 4] = [
        Detail::Full,
        Detail::WithoutTime,
        Detail::WithoutAlias,
        Detail::Minimal,
    ];

    fn shows_time(self) -> bool {
        self == Detail::Full
    }

    fn shows_alias(self) -> bool {
        self <= Detail::WithoutTime
    }

    fn shows_reference(self) -> bool {
        self < Detail::Minimal
    }
}

/// Who reads the text: language and time zone.
#[derive(Debug, Clone)]
pub struct Reader {
    pub locale: Locale,
    pub zone: TimeZone,
}

/// One firing to put into words, with the alert's definition when the read model has it (the trigger
/// alone names the market and price, not the target or threshold).
#[derive(Debug, Clone, Copy)]
pub struct AlertItem<'a> {
    pub trigger: &'a TriggerFired,
    pub condition: Option<&'a AlertCondition>,
}

/// A finished text and what it costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub size: SmsSize,
    pub detail: Detail,
    pub within_budget: bool,
}

/// The text for one or more firings of one user (more than one when coalesced), at the richest detail
/// that fits `segment_budget`.
pub fn render_alerts(items: &[AlertItem<'_>], reader: &Reader, segment_budget: u32) -> Rendered {
    fit(segment_budget, |detail| alerts_text(items, reader, detail))
}

/// Splits firings into runs that each fit the budget as one text, in order; a firing too long even alone
/// is a run of its own. Coalescing aims for one SMS per user and window, but not one over budget.
pub fn pack_alerts(
    items: &[AlertItem<'_>],
    reader: &Reader,
    segment_budget: u32,
) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let mut end = start + 1;
        while end < items.len() {
            let candidate = alerts_text(&items[start..=end], reader, Detail::Minimal);
            if sms::measure(&candidate).segments > segment_budget {
                break;
            }
            end += 1;
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

/// The sign-in SMS. `valid_minutes` is how long the code still works, when known.
pub fn render_sign_in(
    code: &str,
    locale: Locale,
    valid_minutes: Option<u32>,
    segment_budget: u32,
) -> Rendered {
    fit(segment_budget, |detail| {
        let validity = valid_minutes.filter(|_| detail.shows_reference());
        match (locale, validity) {
            (Locale::Ko, Some(minutes)) => {
                format!(
                    "{} 인증번호는 [{code}] 입니다. {minutes}분 안에 입력해 주세요.",
                    prefix(locale)
                )
            }
            (Locale::Ko, None) => format!("{} 인증번호 [{code}]", prefix(locale)),
            (Locale::En, Some(1)) => format!(
                "{} Your sign-in code is {code}. It expires in 1 minute.",
                prefix(locale)
            ),
            (Locale::En, Some(minutes)) => format!(
                "{} Your sign-in code is {code}. It expires in {minutes} minutes.",
                prefix(locale)
            ),
            (Locale::En, None) => format!("{} Code: {code}", prefix(locale)),
        }
    })
}

fn fit(segment_budget: u32, render: impl Fn(Detail) -> String) -> Rendered {
    let mut last = None;
    for detail in Detail::ALL {
        let text = render(detail);
        let size = sms::measure(&text);
        if size.segments <= segment_budget {
            return Rendered {
                text,
                size,
                detail,
                within_budget: true,
            };
        }
        last = Some((text, size, detail));
    }
    let (text, size, detail) = last.unwrap_or_else(|| {
        let text = render(Detail::Minimal);
        let size = sms::measure(&text);
        (text, size, Detail::Minimal)
    });
    Rendered {
        text,
        size,
        detail,
        within_budget: false,
    }
}

fn prefix(locale: Locale) -> &'static str {
    match locale {
        Locale::Ko => "[코인알람]",
        Locale::En => "[CoinAlarm]",
    }
}

fn alerts_text(items: &[AlertItem<'_>], reader: &Reader, detail: Detail) -> String {
    let mut text = String::from(prefix(reader.locale));
    if let [item] = items {
        text.push(' ');
        text.push_str(&item_text(item, reader, detail));
        return text;
    }
    match reader.locale {
        Locale::Ko => {
            let _ = write!(text, " 알림 {}건", items.len());
        }
        Locale::En => {
            let _ = write!(text, " {} alerts", items.len());
        }
    }
    for item in items {
        text.push('\n');
        text.push_str(&item_text(item, reader, detail));
    }
    text
}

fn item_text(item: &AlertItem<'_>, reader: &Reader, detail: Detail) -> String {
    let trigger = item.trigger;
    match item.condition {
        Some(AlertCondition::Scheduled(condition)) => {
            let zone = condition.time_zone().time_zone().ok();
            scheduled_text(trigger, reader, zone.as_ref(), detail)
        }
        Some(AlertCondition::ChangeRate(condition)) => change_text(
            trigger,
            Some((condition.basis, condition.direction, condition.threshold)),
            reader,
            detail,
        ),
        Some(AlertCondition::TargetPrice(condition)) => target_text(
            trigger,
            Some((condition.direction, condition.target)),
            reader,
            detail,
        ),
        None => match trigger.kind {
            proto_events::events::AlertKind::TargetPrice => {
                target_text(trigger, None, reader, detail)
            }
            proto_events::events::AlertKind::ChangeRate => {
                change_text(trigger, None, reader, detail)
            }
            proto_events::events::AlertKind::Scheduled => {
                scheduled_text(trigger, reader, None, detail)
            }
        },
    }
}

/// `(reference, time)` as a parenthesised tail, or nothing when both are dropped.
fn tail(parts: [Option<String>; 2]) -> String {
    let shown: Vec<String> = parts.into_iter().flatten().collect();
    if shown.is_empty() {
        String::new()
    } else {
        format!(" ({})", shown.join(", "))
    }
}

fn market_label(market: &MarketCode, locale: Locale, detail: Detail) -> String {
    let Some(info) = Catalogue::upbit().get(market) else {
        // Unknown to the catalogue: the code is the only name there is.
        return match (locale, detail) {
            (Locale::En, Detail::Minimal) => market.base().to_owned(),
            _ => market.as_str().to_owned(),
        };
    };
    let korean = info.name(Locale::Ko);
    let english = info.name(Locale::En);
    match locale {
        Locale::Ko if detail.shows_alias() && english != korean => format!("{korean}({english})"),
        Locale::Ko => korean.to_owned(),
        Locale::En if detail.shows_alias() => format!("{english} ({market})"),
        Locale::En if detail == Detail::Minimal => market.base().to_owned(),
        Locale::En => english.to_owned(),
    }
}

fn first_observed(trigger: &TriggerFired) -> Option<&ObservedPrice> {
    trigger.observed.first()
}

fn event_time(trigger: &TriggerFired, reader: &Reader, detail: Detail) -> Option<String> {
    detail
        .shows_time()
        .then(|| format::clock_time(trigger.evaluated_at, &reader.zone))
}

fn target_text(
    trigger: &TriggerFired,
    definition: Option<(Direction, proto_events::domain::Price)>,
    reader: &Reader,
    detail: Detail,
) -> String {
    let locale = reader.locale;
    let Some(observed) = first_observed(trigger) else {
        return fallback_text(locale);
    };
    let label = market_label(&observed.market, locale, detail);
    let now = format::price(observed.price, &observed.market, locale);
    let reference = definition
        .filter(|_| detail.shows_reference())
        .map(|(direction, target)| {
            let target = format::price(target, &observed.market, locale);
            match (locale, direction) {
                (Locale::Ko, Direction::Up) => format!("목표 {target} 이상"),
                (Locale::Ko, Direction::Down) => format!("목표 {target} 이하"),
                (Locale::Ko, Direction::Either) => format!("목표 {target}"),
                (Locale::En, Direction::Up) => format!("target {target} or above"),
                (Locale::En, Direction::Down) => format!("target {target} or below"),
                (Locale::En, Direction::Either) => format!("target {target}"),
            }
        });
    let tail = tail([reference, event_time(trigger, reader, detail)]);
    match locale {
        Locale::Ko => format!("{label} 목표가 도달: 현재 {now}{tail}"),
        Locale::En => format!("{label} hit your target: now {now}{tail}"),
    }
}

fn change_text(
    trigger: &TriggerFired,
    definition: Option<(
        ChangeBasis,
        Direction,
        proto_events::domain::ThresholdPercent,
    )>,
    reader: &Reader,
    detail: Detail,
) -> String {
    let locale = reader.locale;
    let Some(observed) = first_observed(trigger) else {
        return fallback_text(locale);
    };
    let label = market_label(&observed.market, locale, detail);
    let now = format::price(observed.price, &observed.market, locale);
    let reference =
        definition
            .filter(|_| detail.shows_reference())
            .map(|(_, direction, threshold)| {
                let threshold = format::threshold(threshold);
                match (locale, direction) {
                    (Locale::Ko, Direction::Up) => format!("기준 +{threshold}"),
                    (Locale::Ko, Direction::Down) => format!("기준 -{threshold}"),
                    (Locale::Ko, Direction::Either) => format!("기준 ±{threshold}"),
                    (Locale::En, Direction::Up) => format!("alert at +{threshold}"),
                    (Locale::En, Direction::Down) => format!("alert at -{threshold}"),
                    // "±" is not in the GSM alphabet: one would turn the whole English text into UCS-2.
                    (Locale::En, Direction::Either) => format!("alert at +/-{threshold}"),
                }
            });
    let tail = tail([reference, event_time(trigger, reader, detail)]);
    let basis = definition.map(|(basis, _, _)| basis);
    let Some(change) = observed.change else {
        return match locale {
            Locale::Ko => format!("{label} 변동률 도달: 현재 {now}{tail}"),
            Locale::En => format!("{label} hit your change alert: now {now}{tail}"),
        };
    };
    let signed = format::signed_percent(change);
    match locale {
        Locale::Ko => {
            let basis = match basis {
                Some(ChangeBasis::Daily) => "전일 대비 ",
                Some(ChangeBasis::Rolling5Minutes) => "5분간 ",
                Some(ChangeBasis::Rolling1Hour) => "1시간 ",
                Some(ChangeBasis::Rolling24Hours) => "24시간 ",
                None => "",
            };
            let movement = if change.value().is_zero() {
                "변동"
            } else if change.value().is_sign_positive() {
                "상승"
            } else {
                "하락"
            };
            format!("{label} {basis}{signed} {movement}: 현재 {now}{tail}")
        }
        Locale::En => {
            let basis = match basis {
                Some(ChangeBasis::Daily) => " today",
                Some(ChangeBasis::Rolling5Minutes) => " in 5 min",
                Some(ChangeBasis::Rolling1Hour) => " in 1 hour",
                Some(ChangeBasis::Rolling24Hours) => " in 24 hours",
                None => "",
            };
            format!("{label} {signed}{basis}: now {now}{tail}")
        }
    }
}

fn scheduled_text(
    trigger: &TriggerFired,
    reader: &Reader,
    schedule_zone: Option<&TimeZone>,
    detail: Detail,
) -> String {
    let locale = reader.locale;
    // The occurrence as the user scheduled it, in the schedule's own zone ("09:00" means their 09:00).
    let time = detail.shows_time().then(|| {
        let at = match trigger.firing {
            Firing::Scheduled { occurrence } => occurrence,
            Firing::Armed { .. } => trigger.evaluated_at,
        };
        format::clock_time(at, schedule_zone.unwrap_or(&reader.zone))
    });
    let mut text = match (locale, time) {
        (Locale::Ko, Some(time)) => format!("정기 시세 {time}"),
        (Locale::Ko, None) => "정기 시세".to_owned(),
        (Locale::En, Some(time)) => format!("Prices at {time}"),
        (Locale::En, None) => "Prices".to_owned(),
    };
    for observed in &trigger.observed {
        let label = market_label(&observed.market, locale, detail);
        let price = format::price(observed.price, &observed.market, locale);
        let _ = write!(text, "\n{label} {price}");
        if let Some(change) = observed.change.filter(|_| detail.shows_reference()) {
            let _ = write!(text, " ({})", format::signed_percent(change));
        }
    }
    text
}

/// A trigger without any observed price is malformed; the user still learns that an alert fired.
fn fallback_text(locale: Locale) -> String {
    match locale {
        Locale::Ko => "알림 조건에 도달했습니다".to_owned(),
        Locale::En => "Your alert fired".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use proto_events::Site;
    use proto_events::domain::{
        AlertId, Exchange, Percent, Price, ThresholdPercent, TimeZoneName, UserId, Weekday,
    };
    use proto_events::events::{
        AlertKind, ChangeRateCondition, PriceSide, ScheduledCondition, TargetPriceCondition,
    };
    use proto_events::ids::TriggerId;

    fn market(code: &str) -> MarketCode {
        MarketCode::parse(code).unwrap()
    }

    fn seoul() -> TimeZone {
        TimeZone::get("Asia/Seoul").unwrap()
    }

    fn reader(locale: Locale) -> Reader {
        Reader {
            locale,
            zone: seoul(),
        }
    }

    fn observed(code: &str, price: &str, change: Option<&str>) -> ObservedPrice {
        ObservedPrice {
            market: market(code),
            price: Price::parse(price).unwrap(),
            change: change.map(|change| Percent::parse(change).unwrap()),
            tick: None,
        }
    }

    fn trigger(kind: AlertKind, observed: Vec<ObservedPrice>) -> TriggerFired {
        let alert_id = AlertId::parse("a1").unwrap();
        let firing = match kind {
            AlertKind::Scheduled => Firing::Scheduled {
                occurrence: "2026-11-02T00:00:00Z".parse().unwrap(),
            },
            _ => Firing::Armed { generation: 1 },
        };
        TriggerFired {
            trigger_id: TriggerId::new(&alert_id, firing),
            alert_id,
            user_id: UserId::parse("u1").unwrap(),
            alert_version: 1,
            home_site: Site::Onprem,
            kind,
            firing,
            exchange: Exchange::upbit(),
            observed,
            // 14:03:20 in Seoul.
            evaluated_at: "2026-11-02T05:03:20Z".parse().unwrap(),
        }
    }

    fn target(direction: Direction, target: &str) -> AlertCondition {
        AlertCondition::TargetPrice(TargetPriceCondition {
            market: market("KRW-BTC"),
            target: Price::parse(target).unwrap(),
            direction,
            side_at_creation: PriceSide::Below,
            reference_price: None,
        })
    }

    fn change(basis: ChangeBasis, direction: Direction, threshold: &str) -> AlertCondition {
        AlertCondition::ChangeRate(ChangeRateCondition {
            market: market("KRW-ETH"),
            basis,
            direction,
            threshold: ThresholdPercent::parse(threshold).unwrap(),
        })
    }

    fn scheduled(markets: &[&str]) -> AlertCondition {
        AlertCondition::Scheduled(
            ScheduledCondition::new(
                markets.iter().map(|code| market(code)).collect(),
                vec![Weekday::Mon],
                vec![],
                jiff::civil::time(9, 0, 0, 0),
                TimeZoneName::seoul(),
            )
            .unwrap(),
        )
    }

    fn one(trigger: &TriggerFired, condition: &AlertCondition, locale: Locale) -> Rendered {
        render_alerts(
            &[AlertItem {
                trigger,
                condition: Some(condition),
            }],
            &reader(locale),
            2,
        )
    }

    #[test]
    fn target_price_texts() {
        let fired = trigger(
            AlertKind::TargetPrice,
            vec![observed("KRW-BTC", "95012000", None)],
        );
        let up = target(Direction::Up, "95000000");
        assert_eq!(
            one(&fired, &up, Locale::Ko).text,
            "[코인알람] 비트코인(Bitcoin) 목표가 도달: 현재 95,012,000원 (목표 95,000,000원 이상, 14:03)"
        );
        let rendered = one(&fired, &up, Locale::En);
        assert_eq!(
            rendered.text,
            "[CoinAlarm] Bitcoin (KRW-BTC) hit your target: now 95,012,000 KRW (target 95,000,000 KRW or above, 14:03)"
        );
        assert_eq!(rendered.size.encoding, sms::Encoding::Gsm7);
        assert_eq!(rendered.size.segments, 1);
        let down = target(Direction::Down, "96000000");
        assert_eq!(
            one(&fired, &down, Locale::Ko).text,
            "[코인알람] 비트코인(Bitcoin) 목표가 도달: 현재 95,012,000원 (목표 96,000,000원 이하, 14:03)"
        );
        assert_eq!(
            one(&fired, &down, Locale::En).text,
            "[CoinAlarm] Bitcoin (KRW-BTC) hit your target: now 95,012,000 KRW (target 96,000,000 KRW or below, 14:03)"
        );
    }

    #[test]
    fn change_rate_texts() {
        let fired = trigger(
            AlertKind::ChangeRate,
            vec![observed("KRW-ETH", "4100000", Some("-3.5172"))],
        );
        let window = change(ChangeBasis::Rolling5Minutes, Direction::Down, "3");
        assert_eq!(
            one(&fired, &window, Locale::Ko).text,
            "[코인알람] 이더리움(Ethereum) 5분간 -3.52% 하락: 현재 4,100,000원 (기준 -3%, 14:03)"
        );
        assert_eq!(
            one(&fired, &window, Locale::En).text,
            "[CoinAlarm] Ethereum (KRW-ETH) -3.52% in 5 min: now 4,100,000 KRW (alert at -3%, 14:03)"
        );
        let rising = trigger(
            AlertKind::ChangeRate,
            vec![observed("KRW-ETH", "4600000", Some("5.1"))],
        );
        let daily = change(ChangeBasis::Daily, Direction::Either, "5");
        assert_eq!(
            one(&rising, &daily, Locale::Ko).text,
            "[코인알람] 이더리움(Ethereum) 전일 대비 +5.1% 상승: 현재 4,600,000원 (기준 ±5%, 14:03)"
        );
        let rendered = one(&rising, &daily, Locale::En);
        assert_eq!(
            rendered.text,
            "[CoinAlarm] Ethereum (KRW-ETH) +5.1% today: now 4,600,000 KRW (alert at +/-5%, 14:03)"
        );
        assert_eq!(rendered.size.encoding, sms::Encoding::Gsm7);
        let hourly = change(ChangeBasis::Rolling1Hour, Direction::Up, "2.5");
        assert_eq!(
            one(&rising, &hourly, Locale::En).text,
            "[CoinAlarm] Ethereum (KRW-ETH) +5.1% in 1 hour: now 4,600,000 KRW (alert at +2.5%, 14:03)"
        );
    }

    #[test]
    fn scheduled_report_texts() {
        let fired = trigger(
            AlertKind::Scheduled,
            vec![
                observed("KRW-BTC", "95000000", None),
                observed("KRW-ETH", "4500000", None),
                observed("BTC-XRP", "0.00000812", None),
            ],
        );
        let condition = scheduled(&["KRW-BTC", "KRW-ETH", "BTC-XRP"]);
        assert_eq!(
            one(&fired, &condition, Locale::Ko).text,
            "[코인알람] 정기 시세 09:00\n비트코인(Bitcoin) 95,000,000원\n이더리움(Ethereum) 4,500,000원\n리플(Ripple) 0.00000812 BTC"
        );
        assert_eq!(
            one(&fired, &condition, Locale::En).text,
            "[CoinAlarm] Prices at 09:00\nBitcoin (KRW-BTC) 95,000,000 KRW\nEthereum (KRW-ETH) 4,500,000 KRW\nRipple (BTC-XRP) 0.00000812 BTC"
        );
    }

    #[test]
    fn sign_in_texts() {
        assert_eq!(
            render_sign_in("483920", Locale::Ko, Some(5), 1).text,
            "[코인알람] 인증번호는 [483920] 입니다. 5분 안에 입력해 주세요."
        );
        assert_eq!(
            render_sign_in("483920", Locale::En, Some(5), 1).text,
            "[CoinAlarm] Your sign-in code is 483920. It expires in 5 minutes."
        );
        assert_eq!(
            render_sign_in("483920", Locale::En, Some(1), 1).text,
            "[CoinAlarm] Your sign-in code is 483920. It expires in 1 minute."
        );
        assert_eq!(
            render_sign_in("483920", Locale::Ko, None, 1).text,
            "[코인알람] 인증번호 [483920]"
        );
    }

    #[test]
    fn without_a_definition_the_text_still_names_market_and_price() {
        let fired = trigger(
            AlertKind::TargetPrice,
            vec![observed("KRW-BTC", "95012000", None)],
        );
        let rendered = render_alerts(
            &[AlertItem {
                trigger: &fired,
                condition: None,
            }],
            &reader(Locale::Ko),
            2,
        );
        assert_eq!(
            rendered.text,
            "[코인알람] 비트코인(Bitcoin) 목표가 도달: 현재 95,012,000원 (14:03)"
        );
        let unknown_market = trigger(
            AlertKind::ChangeRate,
            vec![observed("KRW-NOPE", "12.5", Some("7"))],
        );
        let rendered = render_alerts(
            &[AlertItem {
                trigger: &unknown_market,
                condition: None,
            }],
            &reader(Locale::En),
            2,
        );
        assert_eq!(
            rendered.text,
            "[CoinAlarm] KRW-NOPE +7%: now 12.5 KRW (14:03)"
        );
    }

    #[test]
    fn coalesced_texts_list_every_firing() {
        let price = trigger(
            AlertKind::TargetPrice,
            vec![observed("KRW-BTC", "95012000", None)],
        );
        let moved = trigger(
            AlertKind::ChangeRate,
            vec![observed("KRW-ETH", "4100000", Some("-3.5172"))],
        );
        let up = target(Direction::Up, "95000000");
        let window = change(ChangeBasis::Rolling5Minutes, Direction::Down, "3");
        let items = [
            AlertItem {
                trigger: &price,
                condition: Some(&up),
            },
            AlertItem {
                trigger: &moved,
                condition: Some(&window),
            },
        ];
        let rendered = render_alerts(&items, &reader(Locale::Ko), 2);
        assert_eq!(
            rendered.text,
            "[코인알람] 알림 2건\n비트코인(Bitcoin) 목표가 도달: 현재 95,012,000원 (목표 95,000,000원 이상)\n이더리움(Ethereum) 5분간 -3.52% 하락: 현재 4,100,000원 (기준 -3%)"
        );
        assert_eq!(rendered.detail, Detail::WithoutTime);
        assert_eq!(rendered.size.segments, 2);
        assert!(rendered.within_budget);
        let rendered = render_alerts(&items, &reader(Locale::En), 2);
        assert_eq!(
            rendered.text,
            "[CoinAlarm] 2 alerts\nBitcoin (KRW-BTC) hit your target: now 95,012,000 KRW (target 95,000,000 KRW or above, 14:03)\nEthereum (KRW-ETH) -3.52% in 5 min: now 4,100,000 KRW (alert at -3%, 14:03)"
        );
    }

    #[test]
    fn the_budget_drops_time_then_alias_then_reference_but_never_the_price() {
        let fired = trigger(
            AlertKind::TargetPrice,
            vec![observed("KRW-BTC", "95012000", None)],
        );
        let up = target(Direction::Up, "95000000");
        let item = [AlertItem {
            trigger: &fired,
            condition: Some(&up),
        }];
        let texts: Vec<String> = Detail::ALL
            .iter()
            .map(|detail| alerts_text(&item, &reader(Locale::Ko), *detail))
            .collect();
        assert_eq!(
            texts,
            [
                "[코인알람] 비트코인(Bitcoin) 목표가 도달: 현재 95,012,000원 (목표 95,000,000원 이상, 14:03)",
                "[코인알람] 비트코인(Bitcoin) 목표가 도달: 현재 95,012,000원 (목표 95,000,000원 이상)",
                "[코인알람] 비트코인 목표가 도달: 현재 95,012,000원 (목표 95,000,000원 이상)",
                "[코인알람] 비트코인 목표가 도달: 현재 95,012,000원",
            ]
        );
        // 66 UCS-2 units in full: one segment is enough, nothing dropped.
        let rendered = render_alerts(&item, &reader(Locale::Ko), 1);
        assert_eq!(rendered.detail, Detail::Full);

        // Ten markets in Korean cannot fit one segment even at their shortest: sent anyway, flagged.
        let markets = [
            "KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-DOGE", "KRW-SOL", "KRW-ADA", "KRW-TRX",
            "KRW-DOT", "KRW-LINK", "KRW-AVAX",
        ];
        let report = trigger(
            AlertKind::Scheduled,
            markets
                .iter()
                .map(|code| observed(code, "1000", None))
                .collect(),
        );
        let condition = scheduled(&markets);
        let rendered = render_alerts(
            &[AlertItem {
                trigger: &report,
                condition: Some(&condition),
            }],
            &reader(Locale::Ko),
            1,
        );
        assert!(!rendered.within_budget);
        assert_eq!(rendered.detail, Detail::Minimal);
        assert_eq!(rendered.text.matches("1,000원").count(), 10);
    }

    #[test]
    fn packing_splits_coalesced_firings_that_do_not_fit_one_text() {
        let fired: Vec<TriggerFired> = (0..6)
            .map(|_| {
                trigger(
                    AlertKind::TargetPrice,
                    vec![observed("KRW-BTC", "95012000", None)],
                )
            })
            .collect();
        let items: Vec<AlertItem<'_>> = fired
            .iter()
            .map(|trigger| AlertItem {
                trigger,
                condition: None,
            })
            .collect();
        // Minimal line: "비트코인 목표가 도달: 현재 95,012,000원" is 26 units; header 13.
        // One segment (70) holds one line with the header; two segments (134) hold four.
        assert_eq!(
            pack_alerts(&items, &reader(Locale::Ko), 2),
            vec![0..4, 4..6]
        );
        assert_eq!(
            pack_alerts(&items, &reader(Locale::Ko), 1),
            vec![0..2, 2..4, 4..6]
        );
        assert_eq!(pack_alerts(&items, &reader(Locale::Ko), 10), vec![0..6]);
    }
}
