//! A buffer's billable calls against its customers' quotas: whose quota each key's calls count
//! against, and what one buffer adds to each customer's month (ARCHITECTURE.md, "Plan quotas and usage
//! alerts"). The stores keep the totals; the rules are here, once.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::alerts::UsageAlert;
use crate::batch::DayDelta;
use crate::items::{Email, PlanName};
use crate::key::KeyId;
use crate::quota::QuotaTerms;
use crate::time::Month;

/// Whose quota a key's billable calls count against, as the key carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerQuota {
    /// The customer.
    pub customer: Email,
    /// The key's plan (`None`: the pricing's default).
    pub plan: Option<PlanName>,
    /// The plan's quota and thresholds.
    pub terms: QuotaTerms,
}

impl CustomerQuota {
    /// The alert of `threshold` reached at `used` calls in `period`, counted at `as_of`.
    #[must_use]
    pub fn alert(
        &self,
        keys: Vec<KeyId>,
        used: u64,
        period: Month,
        threshold: u16,
        as_of: DateTime<Utc>,
    ) -> UsageAlert {
        UsageAlert {
            customer: self.customer.clone(),
            keys,
            plan: self.plan.clone(),
            used,
            quota: self.terms.calls,
            mode: self.terms.mode,
            period,
            threshold,
            as_of,
        }
    }
}

/// One customer's month in one buffer: the quota it is held to, the billable calls to add, and the
/// keys that made them.
#[derive(Debug, Clone)]
pub struct CustomerMonth {
    /// The strictest quota among the customer's keys with calls in the buffer.
    pub quota: Arc<CustomerQuota>,
    /// Billable calls.
    pub calls: u64,
    /// The keys, each once.
    pub keys: Vec<KeyId>,
}

/// A buffer's billable calls of keys with a quota, per customer and month: a customer holding keys of
/// several quotas is held to the strictest ([`QuotaTerms::strictest`]).
#[must_use]
pub fn customer_months<'a>(
    days: impl IntoIterator<Item = (&'a DayDelta, &'a Arc<CustomerQuota>)>,
) -> BTreeMap<(Email, Month), CustomerMonth> {
    let mut months: BTreeMap<(Email, Month), CustomerMonth> = BTreeMap::new();
    for (day, quota) in days {
        if day.tally.successful_calls == 0 {
            continue;
        }
        let month = months
            .entry((quota.customer.clone(), day.day.month()))
            .or_insert_with(|| CustomerMonth { quota: Arc::clone(quota), calls: 0, keys: Vec::new() });
        if QuotaTerms::strictest([&month.quota.terms, &quota.terms]) == Some(&quota.terms) {
            month.quota = Arc::clone(quota);
        }
        month.calls += day.tally.successful_calls;
        if !month.keys.contains(&day.key_id) {
            month.keys.push(day.key_id.clone());
        }
    }
    months
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counting::Tally;
    use crate::quota::QuotaMode;
    use crate::time::Day;

    #[test]
    fn a_buffer_counts_per_customer_and_month_held_to_the_strictest_quota() {
        let quota = |calls, plan: &str| {
            Arc::new(CustomerQuota {
                customer: Email::parse("ada@example.com").unwrap(),
                plan: Some(PlanName::parse(plan).unwrap()),
                terms: QuotaTerms::new(calls, QuotaMode::Hard, Vec::new()).unwrap(),
            })
        };
        let (big, small) = (quota(100, "big"), quota(10, "small"));
        let day = |key: &str, day: &str, billable: u64| DayDelta {
            key_id: KeyId::parse(key).unwrap(),
            day: day.parse::<Day>().unwrap(),
            tally: Tally { successful_calls: billable, failed_calls: 1, usage_count: billable + 1 },
            last_used: DateTime::default(),
        };
        let days = [
            day("aaaaaaaaaaaa", "2026-12-07", 3),
            day("bbbbbbbbbbbb", "2026-12-07", 2),
            day("aaaaaaaaaaaa", "2026-12-08", 1),
            day("aaaaaaaaaaaa", "2026-11-30", 5),
            day("cccccccccccc", "2026-12-07", 0),
        ];
        let quotas = [&big, &small, &big, &big, &small];
        let months = customer_months(days.iter().zip(quotas));
        let ada = Email::parse("ada@example.com").unwrap();
        let december = &months[&(ada.clone(), Month::new(2026, 12).unwrap())];
        assert_eq!((december.calls, december.quota.terms.calls, december.keys.len()), (6, 10, 2));
        let november = &months[&(ada, Month::new(2026, 11).unwrap())];
        assert_eq!((november.calls, november.quota.terms.calls), (5, 100));
        assert_eq!(months.len(), 2, "a day without billable calls counts nothing");
    }
}
