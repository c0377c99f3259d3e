//! DATA frames: the payload, gRPC messages reassembled per stream and side
//! (within the message size limit and the memory budget), and the exchange's
//! byte counts and end.

use bytes::Bytes;

use super::DataMode;
use super::conn::View;
use super::decoder::Ctx;
use super::frame::{self, Header};
use super::grpc::{GrpcError, Messages as Reassembly};
use super::protobuf;
use super::record::{Body, FrameRecord, GrpcData, Messages, Shown};

/// One whole gRPC message, exactly: flag 0 or 1, then a length that matches.
fn looks_like_grpc(data: &[u8]) -> bool {
    data.len() >= 5
        && data[0] <= 1
        && u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize == data.len() - 5
}

impl View {
    pub(crate) fn data(
        &mut self,
        side: usize,
        h: &Header,
        pad: Option<u8>,
        data: Bytes,
        ctx: &mut Ctx<'_, '_>,
    ) {
        let id = h.stream_id;
        let s = ctx.s;
        let cfg = &s.cfg;
        if cfg.grpc && looks_like_grpc(&data) {
            // Joined midway, the stream's content-type may be unknown (never
            // seen, or a table entry from before): a DATA frame that is
            // exactly one gRPC message is taken as gRPC, marked as inferred.
            let unknown = self
                .streams
                .get(id)
                .is_none_or(|s| !s.grpc && !s.content_type_known && s.messages[side].is_none());
            if unknown && self.room_for(id, ctx) {
                match self.streams.entry(id) {
                    Ok(st) => {
                        st.grpc = true;
                        st.inferred = true;
                    }
                    Err(_) => {
                        self.drop_state(ctx);
                        return;
                    }
                }
            }
        }
        let mut grpc_err = None;
        let grpc = match self.streams.get_mut(id) {
            Some(st) if cfg.grpc && st.grpc => {
                let acc = st.messages[side]
                    .get_or_insert_with(|| Reassembly::with_budget(ctx.s.budget.clone()));
                let mut msgs = Messages::None;
                let mut got = Vec::new();
                if let Err(e) = acc.push(&data, ctx.s.limits.message_size, &mut got) {
                    grpc_err = Some(e);
                    st.messages[side] = None;
                    st.grpc = false;
                }
                for msg in got {
                    let view = if msg.compressed {
                        protobuf::Check::NotMessage
                    } else {
                        protobuf::check(&msg.data, &ctx.s.proto)
                    };
                    msgs.push(Shown { msg, view });
                }
                let partial = st.messages[side]
                    .as_ref()
                    .filter(|a| a.pending() > 0)
                    .map(|a| (a.pending(), a.expected().map(|l| l + 5)));
                Some(GrpcData {
                    method: st.path.clone().or_else(|| ctx.sibling_path(id)),
                    inferred: st.inferred,
                    messages: msgs,
                    partial,
                    proto: ctx.s.proto,
                })
            }
            _ => None,
        };
        let too_many: Vec<usize> = grpc
            .iter()
            .flat_map(|g| g.messages.as_slice())
            .filter(|s| s.view == protobuf::Check::TooManyFields)
            .map(|s| s.msg.data.len())
            .collect();
        ctx.record(FrameRecord {
            kind: h.kind,
            flags: h.flags,
            stream_id: id,
            length: h.length,
            body: Body::Data {
                pad,
                data,
                b64: ctx.s.cfg.data == DataMode::B64,
                grpc,
            },
        });
        for len in too_many {
            ctx.limit(format!(
                "gRPC message of {len} bytes on stream {id} on connection {} has more than limits.protobuf_fields ({}) protobuf fields: its protobuf view is not shown",
                ctx.conn(),
                ctx.s.limits.protobuf_fields
            ));
        }
        match grpc_err {
            Some(GrpcError::Budget) => {
                self.drop_state(ctx);
                return;
            }
            Some(e @ GrpcError::TooLarge { .. }) => {
                ctx.limit(format!(
                    "DATA frame on stream {id} on connection {}: {e}; the stream's messages are no longer reassembled",
                    ctx.conn()
                ));
            }
            Some(e) => ctx.error(None, format!("DATA frame on stream {id}: {e}")),
            None => {}
        }
        if let Some(p) = self
            .streams
            .get_mut(id)
            .and_then(|s| s.exchange.as_deref_mut())
        {
            if p.req_side == side {
                p.request_bytes += u64::from(h.length);
            } else {
                p.response_frame(ctx.event, h.length);
            }
        }
        if h.has(frame::END_STREAM) {
            self.end_stream(side, id, ctx);
        }
    }
}
