//! The wire format: a fixed 16-byte header, then a postcard payload.
//!
//! Guarantees (specified byte by byte in `runtime/WIRE.md`):
//! - A header is validated (magic, protocol version, schema hash, known kind, payload
//!   length within the kind's cap) before any payload byte is read or allocated.
//! - A payload is decoded only from a slice of exactly the announced length, and
//!   trailing bytes after the message are an error.
//! - Every failure is a typed [`WireError`]; decoding never panics on any input.

mod close;
mod codec_flag;
mod describe;
mod error;
mod fl;
mod frame;
mod message;
mod split;
mod tensor;

pub use close::{CloseCode, MAX_CLOSE_REASON};
pub use codec_flag::{CodecFlag, CodecSyntax};
pub use describe::{Capabilities, CodecDesc, ModelDesc, RunPlan};
pub use error::WireError;
pub use fl::{Join, ModelPayload, RoundConfig, RoundResult, RoundTask, Update};
pub use frame::{FrameHeader, HEADER_LEN, decode_payload, encode_frame};
pub use message::{Close, Hello, HelloAck, Kind, Message, NodeName, Reason, SoftwareName};
pub use split::{Activations, CutGradient, Eval, MAX_BATCH, Metrics};
pub use tensor::{CHUNK_MAX, TensorAssembler, TensorMessage, chunk_headers, wire_bytes};

/// The 4 bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"TNDM";

/// The protocol version this build speaks. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;

/// The oldest protocol version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Describes every message layout of this protocol version. Any change to a message's
/// fields must change this text by hand, so that peers built from different schemas
/// refuse each other instead of misreading bytes. Nothing derives it from the types: the
/// golden-byte tests catch most layout changes, not all (a wider integer type encodes
/// small values identically), so review message changes against it.
const SCHEMA: &str = "tandem-wire/1 \
    Capabilities=u32 \
    CodecDesc=enum{Identity,F16,Int8{block:u16},LowRank{rank:u16,power_iters:u8,factor_bits:u8},\
    TopK{ratio_ppm:u32},Dct{keep_ppm:u32},Acp{rank:u16,factor_bits:u8}} \
    ModelDesc{name:str<32>,cut:u8,hidden:u16} \
    Hello{min_version:u16,max_version:u16,node:str<64>,software:str<32>,capabilities:Capabilities,\
    model:ModelDesc,codecs:vec<CodecDesc,8>,plan:RunPlan} \
    RunPlan{steps:u64,warmup:u64,run:u64,process:u64,start_step:u64,checkpoint_every:u64,\
    max_batch:u16,max_seq:u16} \
    HelloAck{version:u16,peer:str<64>,software:str<32>,capabilities:Capabilities,session:u64} \
    Close{code:u32,reason:str<128>} \
    Activations{step:u64,train:bool,batch:u16,seq:u16,hidden:u16,seq_lens:vec<u16,256>,\
    labels:vec<u32,256>,reviews:vec<u32,256>,cached:bool,codec:CodecDesc,payload_len:u64} \
    CutGradient{step:u64,loss:f32,kept:bool,codec:CodecDesc,payload_len:u64} \
    Eval{step:u64,batches:u32} \
    Metrics{step:u64,loss:f32,correct:u32,total:u32} \
    Join{node:str<64>,num_examples:u64,capabilities:Capabilities} \
    RoundConfig{local_epochs:u16,batch_size:u16,lr:f32,proximal_mu:f32} \
    ModelPayload=enum{Full,Delta{base_round:u64,base_fnv:u64}} \
    RoundTask{round:u64,deadline_ms:u64,config:RoundConfig,model:ModelPayload,\
    model_codec:CodecDesc,update_codec:CodecDesc,payload_len:u64,factors_len:u64} \
    Update{round:u64,node:str<64>,num_examples:u64,train_loss:f32,codec:CodecDesc,\
    payload_len:u64} \
    RoundResult{round:u64,committed:bool,accepted:u32,rejected:u32} \
    Chunk=raw";

/// FNV-1a hash of [`SCHEMA`], carried in every header.
pub const SCHEMA_HASH: u32 = fnv1a(SCHEMA.as_bytes());

const fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash = 0x811c_9dc5u32;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// The software name and version sent in Hello/HelloAck, e.g. `tandem 0.1.0`.
pub fn software_name(binary: &str) -> SoftwareName {
    let mut name = SoftwareName::new();
    for part in [binary, " ", env!("CARGO_PKG_VERSION")] {
        // Truncation is harmless here: the field is informational.
        for c in part.chars() {
            if name.push(c).is_err() {
                return name;
            }
        }
    }
    name
}

#[cfg(test)]
mod tests;
