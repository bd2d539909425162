//! [`RedisBus`](super::RedisBus) as an [`Outbound`](crate::socket::Outbound) machine: its
//! inherent socket methods, for an adapter's one outbound-socket driver.

crate::socket::outbound_by_inherent!(super::RedisBus);
