//! The RFC 2136 DNS-01 method: one dynamic update per record, signed with TSIG (RFC 8945), sent over
//! TCP to the zone's primary. Adding appends the value to the TXT RRset (an apex and its wildcard
//! share the name); removing deletes exactly that value.
//!
//! The answer must carry our request's id and, when it reports success, a TSIG signature made with
//! the same key: an unsigned "NOERROR" could come from anyone on the path. An error code gets a hint
//! for the usual cause (NOTAUTH: key name, algorithm, secret or clock; REFUSED: `allow-update` /
//! `update-policy`; NOTZONE: the zone).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm as HickoryAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{update_message, Message, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, RecordSet, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::info;

use super::{DnsError, TxtRecord};
use crate::config::{Rfc2136Config, TsigAlgorithm};

/// The TTL of the records certd adds: short, since they live for minutes.
const RECORD_TTL: u32 = 60;
/// How far the server's clock may be from ours (RFC 8945 §10 recommends 300 s).
const FUDGE_SECS: u16 = 300;
/// Connecting, sending and reading the answer together.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

fn dns_name(text: &str) -> Result<Name, DnsError> {
    Name::from_ascii(format!("{}.", text.trim_end_matches('.'))).map_err(|err| DnsError::BadName {
        name: text.to_owned(),
        reason: err.to_string(),
    })
}

/// Adds (`add == true`) or removes `record` in `zone` at `config.server`.
pub(super) async fn update(
    config: &Rfc2136Config,
    zone: &str,
    record: &TxtRecord,
    add: bool,
) -> Result<(), DnsError> {
    let server = config.server;
    let secret = crate::config::read_tsig_secret(&config.secret_file)
        .map_err(|reason| DnsError::Secret { reason })?;
    let algorithm = match config.algorithm {
        TsigAlgorithm::HmacSha256 => HickoryAlgorithm::HmacSha256,
        TsigAlgorithm::HmacSha384 => HickoryAlgorithm::HmacSha384,
        TsigAlgorithm::HmacSha512 => HickoryAlgorithm::HmacSha512,
    };
    let signer = TSigner::new(
        secret.to_vec(),
        algorithm,
        dns_name(&config.key_name)?,
        FUDGE_SECS,
    )
    .map_err(|err| DnsError::Secret {
        reason: format!("the TSIG key cannot be used: {err}"),
    })?;

    let name = dns_name(&record.name)?;
    let zone_name = dns_name(zone)?;
    // Checked here: hickory's builders assert it.
    if !zone_name.zone_of(&name) {
        return Err(DnsError::OutsideZone {
            record: record.name.clone(),
            zone: zone.to_owned(),
        });
    }
    let mut rrset = RecordSet::with_ttl(name, RecordType::TXT, RECORD_TTL);
    rrset.add_rdata(RData::TXT(TXT::new(vec![record.value.clone()])));
    let mut message = if add {
        update_message::append(rrset, zone_name, false, false)
    } else {
        update_message::delete_by_rdata(rrset, zone_name, false)
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since| u32::try_from(since.as_secs()).ok())
        .ok_or_else(|| DnsError::Secret {
            reason: "the system clock is outside what TSIG can sign (before 1970 or after 2106)"
                .to_owned(),
        })?;
    let bad = |reason: String| DnsError::BadResponse {
        server,
        record: record.name.clone(),
        reason,
    };
    let verifier = message
        .finalize(&signer, now)
        .map_err(|err| bad(format!("cannot sign the update: {err}")))?;
    let request = message
        .to_vec()
        .map_err(|err| bad(format!("cannot encode the update: {err}")))?;

    let answer = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(server, &request))
        .await
        .map_err(|_| DnsError::Unreachable {
            server,
            record: record.name.clone(),
            reason: format!("no answer within {}s", EXCHANGE_TIMEOUT.as_secs()),
        })?
        .map_err(|err| DnsError::Unreachable {
            server,
            record: record.name.clone(),
            reason: err.to_string(),
        })?;
    let response =
        Message::from_vec(&answer).map_err(|err| bad(format!("not a DNS message: {err}")))?;
    if response.id() != message.id() {
        return Err(bad(format!(
            "the answer's id {} is not the update's {}",
            response.id(),
            message.id()
        )));
    }
    let code = response.response_code();
    if code != ResponseCode::NoError {
        let key = &config.key_name;
        let hint = match code {
            ResponseCode::NotAuth => format!(
                "the server does not accept TSIG key `{key}` ({}); check `tsig_key`, \
                 `tsig_algorithm` and the secret in {}, and that both clocks are right",
                config.algorithm.name(),
                config.secret_file.display()
            ),
            ResponseCode::Refused => format!(
                "key `{key}` may not update {} (check the zone's `allow-update` or \
                 `update-policy`)",
                record.name
            ),
            ResponseCode::NotZone => format!(
                "the server is not authoritative for the zone {zone}; set `zone` to the zone \
                 that holds {}",
                record.name
            ),
            ResponseCode::ServFail => "the server failed to apply it (see its log)".to_owned(),
            _ => "see the server's log".to_owned(),
        };
        return Err(DnsError::UpdateRefused {
            server,
            record: record.name.clone(),
            rcode: rcode_name(code),
            hint,
        });
    }
    match verifier {
        Some(mut verify) => {
            verify(&answer).map_err(|err| {
                bad(format!(
                    "its success answer is not signed with key `{}`: {err}",
                    config.key_name
                ))
            })?;
        }
        None => return Err(bad("the update was not signed".to_owned())),
    }
    info!(%server, zone, record = %record.name, action = if add { "add" } else { "remove" }, "DNS update applied");
    Ok(())
}

/// One DNS message over TCP (RFC 1035 §4.2.2: each message is preceded by its 2-byte length).
async fn exchange(server: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let length = u16::try_from(request.len())
        .map_err(|_| std::io::Error::other("the update is larger than a DNS message can be"))?;
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).await?;
    // At most 64 KiB by construction.
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

/// A response code as DNS tools print it (`NOTAUTH`, `REFUSED`).
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        ResponseCode::YXDomain => "YXDOMAIN".to_owned(),
        ResponseCode::YXRRSet => "YXRRSET".to_owned(),
        ResponseCode::NXRRSet => "NXRRSET".to_owned(),
        ResponseCode::NotAuth => "NOTAUTH".to_owned(),
        ResponseCode::NotZone => "NOTZONE".to_owned(),
        other => format!("response code {}", u16::from(other)),
    }
}
