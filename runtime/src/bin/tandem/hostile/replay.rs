//! The federated attacker of `tandem hostile`: a device that joins rounds and, in each,
//! sends a valid update (a zero change, identity-coded: counted), then the same update
//! again, the previous round's update, and an update in another device's name. The
//! round's result says how many updates the cloud refused; the cloud's metrics say whose
//! it counted.

use super::probe::{Session, Target};
use anyhow::{Context, Result};
use tandem_runtime::session::Envelope;
use tandem_runtime::transport::{self, Inbound, Received};
use tandem_runtime::wire::{CodecDesc, ModelPayload, NodeName, RoundTask, Update};

/// The node whose name the spoofed update claims.
const SPOOFED: &str = "fl-device-0";

/// Takes part in `rounds` rounds (or until the connection ends), printing one line per
/// round.
pub(super) async fn participate(target: &Target, rounds: u64) -> Result<()> {
    let session = target.session("replayed-update").await?;
    session.join(1000).await?;
    let inbound = Inbound::device();
    let mut previous: Option<(Update, Vec<u8>)> = None;
    // Updates sent that the cloud must refuse, this round.
    let mut bad = 0u32;
    let mut ended = 0;
    while ended < rounds {
        let recv = match session.connection.accept_uni().await {
            Ok(recv) => recv,
            Err(err) => {
                println!("replayed-update: the connection ended: {err}");
                return Ok(());
            }
        };
        match transport::receive_envelope(recv, &inbound).await {
            Received::Message(Envelope::RoundTask(task, model), _) => {
                let Some(ours) = zero_update(&session, &task, &model) else {
                    println!(
                        "replayed-update: round {}: not an identity round ({:?} down, {:?} up); nothing sent",
                        task.round, task.model_codec, task.update_codec
                    );
                    continue;
                };
                let spoofed = Update {
                    node: NodeName::try_from(SPOOFED).unwrap_or_default(),
                    ..ours.0.clone()
                };
                let mut sends = vec![ours.clone(), ours.clone(), (spoofed, ours.1.clone())];
                // The last round it took part in (rounds start once enough devices are
                // connected, so it may have missed the first).
                let replays_previous = previous.is_some();
                if let Some(old) = previous.take() {
                    sends.push(old);
                }
                for (update, payload) in sends {
                    transport::send_envelope(
                        &session.connection,
                        &Envelope::Update(update, payload),
                    )
                    .await
                    .context("sending an update")?;
                }
                // The replay, the spoofed one and, if it had one, its last round's.
                bad = 2 + u32::from(replays_previous);
                previous = Some(ours);
            }
            Received::Message(Envelope::RoundResult(result), _) => {
                ended += 1;
                println!(
                    "replayed-update: round {}: sent 1 valid update and {bad} to refuse (a replay, \
                 one as {SPOOFED}{}); the cloud: {} accepted, {} refused in all",
                    result.round,
                    if bad > 2 { ", its last round's" } else { "" },
                    result.accepted,
                    result.rejected
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// A valid update of `task`'s round: no change, identity-coded, in the layout of the
/// model (an identity model sent whole: each tensor a u32 byte length and its f32s);
/// `None` for other rounds.
fn zero_update(session: &Session, task: &RoundTask, model: &[u8]) -> Option<(Update, Vec<u8>)> {
    let identity = task.model == ModelPayload::Full
        && task.model_codec == CodecDesc::Identity
        && task.update_codec == CodecDesc::Identity
        && task.factors_len == 0;
    if !identity {
        return None;
    }
    let payload = zeroed(model)?;
    let update = Update {
        round: task.round,
        node: session.node.clone(),
        num_examples: 1000,
        train_loss: f32::NAN,
        codec: CodecDesc::Identity,
        payload_len: payload.len() as u64,
    };
    Some((update, payload))
}

/// `model` (identity-coded tensors, each a u32 byte length and its bytes) with every
/// value zero; `None` if it is not laid out so.
fn zeroed(model: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(model.len());
    let mut rest = model;
    while !rest.is_empty() {
        let (len, body) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        if body.len() < len {
            return None;
        }
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.resize(out.len() + len, 0);
        rest = &body[len..];
    }
    Some(out)
}
