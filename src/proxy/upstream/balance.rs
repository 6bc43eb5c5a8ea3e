//! Picking a server of a group for one attempt, as nginx's balancers do: smooth weighted round
//! robin (`ngx_http_upstream_round_robin`), least connections relative to weight
//! (`least_conn`), and `ip_hash` with nginx's own hash (IPv4 by its first three octets, so one
//! client network sticks to one server). Backup servers are picked only when no primary is up and
//! untried; when every server is down before the first attempt, all are forgiven and tried anyway,
//! as nginx does, so a group never refuses a request without trying.
//!
//! Everything here is a pure function of the servers' state, the servers already tried for this
//! request (a bit mask), the client and the time.

use std::net::IpAddr;
use std::time::Instant;

use super::health::Health;
use super::Balance;

/// What the balancer knows of one server.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerState {
    /// Its weight (at least 1).
    pub weight: i64,
    /// A backup server.
    pub backup: bool,
    /// Smooth round robin's running weight.
    pub current: i64,
    /// Its passive health.
    pub health: Health,
    /// Requests sent to it that have not finished.
    pub in_flight: usize,
}

impl PeerState {
    /// A primary (or backup) server of this weight, up, with nothing in flight.
    pub(crate) fn new(weight: u32, backup: bool) -> Self {
        Self {
            weight: i64::from(weight.max(1)),
            backup,
            ..Self::default()
        }
    }
}

/// The server for the next attempt, or `None` when every server has been tried (or is down and
/// this is not the first attempt): then the request fails.
pub(crate) fn choose(
    balance: Balance,
    peers: &mut [PeerState],
    tried: u64,
    client: IpAddr,
    now: Instant,
) -> Option<usize> {
    if let Some(picked) = pick(balance, peers, tried, client, now) {
        return Some(picked);
    }
    if tried != 0 {
        return None;
    }
    // Every server is down: nginx forgets their failures rather than refuse the request.
    for peer in peers.iter_mut() {
        peer.health.succeeded();
    }
    pick(balance, peers, tried, client, now)
}

fn pick(
    balance: Balance,
    peers: &mut [PeerState],
    tried: u64,
    client: IpAddr,
    now: Instant,
) -> Option<usize> {
    let usable = |backup: bool| {
        move |i: usize, peer: &PeerState| {
            peer.backup == backup && tried & bit(i) == 0 && peer.health.is_up(now)
        }
    };
    for backup in [false, true] {
        let usable = usable(backup);
        let picked = match balance {
            Balance::RoundRobin => smooth_round_robin(peers, usable),
            Balance::LeastConn => least_conn(peers, usable),
            Balance::IpHash => {
                ip_hash(peers, client, usable).or_else(|| smooth_round_robin(peers, usable))
            }
        };
        if picked.is_some() {
            return picked;
        }
    }
    None
}

/// The bit of server `i` in a `tried` mask (groups have at most 64 servers).
pub(crate) fn bit(i: usize) -> u64 {
    u32::try_from(i)
        .ok()
        .and_then(|i| 1u64.checked_shl(i))
        .unwrap_or(0)
}

/// nginx's smooth weighted round robin: every usable server's running weight grows by its weight,
/// the largest is picked and loses the total. Weights 5, 1, 1 give a a b a c a a, not a a a a a b c.
fn smooth_round_robin(
    peers: &mut [PeerState],
    usable: impl Fn(usize, &PeerState) -> bool,
) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<(usize, i64)> = None;
    for (i, peer) in peers.iter_mut().enumerate() {
        if !usable(i, peer) {
            continue;
        }
        peer.current = peer.current.saturating_add(peer.weight);
        total = total.saturating_add(peer.weight);
        if best.is_none_or(|(_, current)| peer.current > current) {
            best = Some((i, peer.current));
        }
    }
    let (i, _) = best?;
    let peer = peers.get_mut(i)?;
    peer.current = peer.current.saturating_sub(total);
    Some(i)
}

/// The usable server with the fewest requests in flight per unit of weight; ties go round robin.
fn least_conn(
    peers: &mut [PeerState],
    usable: impl Fn(usize, &PeerState) -> bool,
) -> Option<usize> {
    // a has fewer per weight than b: a.in_flight / a.weight < b.in_flight / b.weight.
    let load = |peer: &PeerState| (peer.in_flight as u128, peer.weight.max(1) as u128);
    let fewer = |a: (u128, u128), b: (u128, u128)| a.0 * b.1 < b.0 * a.1;
    let mut best: Option<(u128, u128)> = None;
    for (i, peer) in peers.iter().enumerate() {
        if usable(i, peer) && best.is_none_or(|best| fewer(load(peer), best)) {
            best = Some(load(peer));
        }
    }
    let best = best?;
    let tied = |i: usize, peer: &PeerState| {
        usable(i, peer) && !fewer(load(peer), best) && !fewer(best, load(peer))
    };
    smooth_round_robin(peers, tied)
}

/// nginx's `ip_hash`: the hash of the client's network (IPv4: first three octets; IPv6: the whole
/// address) picks a server by weight; a server that is down or tried makes it hash again, up to 20
/// times, then round robin takes over. `None` when no server was found that way.
fn ip_hash(
    peers: &[PeerState],
    client: IpAddr,
    usable: impl Fn(usize, &PeerState) -> bool,
) -> Option<usize> {
    let v4;
    let v6;
    let key: &[u8] = match client {
        IpAddr::V4(ip) => {
            v4 = ip.octets();
            &v4[..3]
        }
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(ip) => {
                v4 = ip.octets();
                &v4[..3]
            }
            None => {
                v6 = ip.octets();
                &v6
            }
        },
    };
    let total: u64 = peers
        .iter()
        .filter(|peer| !peer.backup)
        .map(|peer| peer.weight.unsigned_abs())
        .sum();
    if total == 0 {
        return None;
    }
    let mut hash: u64 = 89;
    for _ in 0..20 {
        for byte in key {
            hash = (hash * 113 + u64::from(*byte)) % 6271;
        }
        let mut w = hash % total;
        let mut chosen = None;
        for (i, peer) in peers.iter().enumerate().filter(|(_, peer)| !peer.backup) {
            let weight = peer.weight.unsigned_abs();
            if w < weight {
                chosen = Some(i);
                break;
            }
            w -= weight;
        }
        if let Some(i) = chosen {
            if peers.get(i).is_some_and(|peer| usable(i, peer)) {
                return Some(i);
            }
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    fn peers(weights: &[u32]) -> Vec<PeerState> {
        weights.iter().map(|w| PeerState::new(*w, false)).collect()
    }

    fn sequence(balance: Balance, peers: &mut [PeerState], n: usize) -> Vec<usize> {
        let now = Instant::now();
        (0..n)
            .map(|_| choose(balance, peers, 0, CLIENT, now).unwrap())
            .collect()
    }

    #[test]
    fn round_robin_alternates_equal_servers() {
        let mut peers = peers(&[1, 1]);
        assert_eq!(
            sequence(Balance::RoundRobin, &mut peers, 6),
            [0, 1, 0, 1, 0, 1]
        );
    }

    #[test]
    fn round_robin_is_smooth_and_honours_weights() {
        let mut peers = peers(&[5, 1, 1]);
        // nginx's documented order for weights 5, 1, 1.
        assert_eq!(
            sequence(Balance::RoundRobin, &mut peers, 7),
            [0, 0, 1, 0, 2, 0, 0]
        );
        let mut peers = self::peers(&[3, 1]);
        let picks = sequence(Balance::RoundRobin, &mut peers, 400);
        assert_eq!(picks.iter().filter(|i| **i == 0).count(), 300);
    }

    #[test]
    fn least_conn_picks_the_server_with_fewest_in_flight() {
        let mut peers = peers(&[1, 1, 1]);
        peers[0].in_flight = 4;
        peers[1].in_flight = 1;
        peers[2].in_flight = 3;
        assert_eq!(sequence(Balance::LeastConn, &mut peers, 3), [1, 1, 1]);
        // Relative to weight: 4 in flight at weight 8 is less loaded than 1 at weight 1.
        peers[0].weight = 8;
        assert_eq!(sequence(Balance::LeastConn, &mut peers, 1), [0]);
        // Ties go round robin.
        let mut tied = self::peers(&[1, 1]);
        assert_eq!(sequence(Balance::LeastConn, &mut tied, 4), [0, 1, 0, 1]);
    }

    #[test]
    fn ip_hash_is_stable_per_client_network_like_nginx() {
        let mut peers = peers(&[1, 1, 1]);
        let now = Instant::now();
        let first = choose(Balance::IpHash, &mut peers, 0, CLIENT, now).unwrap();
        for _ in 0..10 {
            assert_eq!(
                choose(Balance::IpHash, &mut peers, 0, CLIENT, now),
                Some(first)
            );
        }
        // The last octet is not hashed: the whole /24 goes to the same server.
        let neighbour: IpAddr = "192.0.2.200".parse().unwrap();
        assert_eq!(
            choose(Balance::IpHash, &mut peers, 0, neighbour, now),
            Some(first)
        );
        // nginx's hash of 192.0.2.x over three servers of weight 1, worked by hand:
        // 89 → (89*113+192)%6271 = 3978 → (3978*113+0)%6271 = 4273 → (4273*113+2)%6271 = 6255;
        // 6255 % 3 = 0.
        assert_eq!(first, 0);
        // Different networks spread over the servers.
        let spread: std::collections::HashSet<usize> = (0..=255u8)
            .map(|octet| {
                let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, octet, 0, 1));
                choose(Balance::IpHash, &mut peers, 0, ip, now).unwrap()
            })
            .collect();
        assert_eq!(spread.len(), 3);
    }

    #[test]
    fn ip_hash_moves_on_when_its_server_is_down_or_tried() {
        let mut peers = peers(&[1, 1, 1]);
        let now = Instant::now();
        // CLIENT hashes to server 0 (see above).
        peers[0].health.failed(now, 1, Duration::from_secs(10));
        let picked = choose(Balance::IpHash, &mut peers, 0, CLIENT, now).unwrap();
        assert_ne!(picked, 0);
        // Stable while server 0 stays down.
        assert_eq!(
            choose(Balance::IpHash, &mut peers, 0, CLIENT, now),
            Some(picked)
        );
        let next = choose(Balance::IpHash, &mut peers, bit(picked), CLIENT, now).unwrap();
        assert!(next != 0 && next != picked);
    }

    #[test]
    fn down_and_tried_servers_are_skipped_and_backups_wait_for_the_primaries() {
        let now = Instant::now();
        let mut peers = peers(&[1, 1]);
        peers.push(PeerState::new(1, true));
        assert_eq!(sequence(Balance::RoundRobin, &mut peers, 4), [0, 1, 0, 1]);
        peers[0].health.failed(now, 1, Duration::from_secs(10));
        assert_eq!(
            choose(Balance::RoundRobin, &mut peers, 0, CLIENT, now),
            Some(1)
        );
        // Server 1 was tried for this request: the backup is next.
        assert_eq!(
            choose(Balance::RoundRobin, &mut peers, bit(1), CLIENT, now),
            Some(2)
        );
        assert_eq!(
            choose(
                Balance::RoundRobin,
                &mut peers,
                bit(1) | bit(2),
                CLIENT,
                now
            ),
            None
        );
        peers[1].health.failed(now, 1, Duration::from_secs(10));
        assert_eq!(sequence(Balance::LeastConn, &mut peers, 2), [2, 2]);
    }

    #[test]
    fn when_every_server_is_down_they_are_tried_anyway() {
        let now = Instant::now();
        let mut peers = peers(&[1, 1]);
        for peer in &mut peers {
            peer.health.failed(now, 1, Duration::from_secs(10));
        }
        let first = choose(Balance::RoundRobin, &mut peers, 0, CLIENT, now).unwrap();
        assert!(peers.iter().all(|peer| peer.health.is_up(now)), "forgiven");
        let second = choose(Balance::RoundRobin, &mut peers, bit(first), CLIENT, now).unwrap();
        assert_ne!(first, second);
        assert_eq!(
            choose(
                Balance::RoundRobin,
                &mut peers,
                bit(0) | bit(1),
                CLIENT,
                now
            ),
            None
        );
    }
}
