//! What the fuzz targets share: the framing of any bytes as a Kafka record
//! (`decode_record`, `map_encode`), the walk over a decode result
//! (`decode_record`, `decode_value`) and the stack-overflow report (all).

use std::sync::Once;

use projector::decode::{DecodeError, Decoded};
use projector::source::{Lineage, SourceRecord};

/// The topic of the records [`framed_record`] makes.
pub const TOPIC: &str = "vexere.vexere.dbo.Seats";

/// Any bytes split into a Kafka record's key and value on [`TOPIC`]: the
/// first byte is the key's length (0xff: no key; the value is then everything
/// after it), and a value of exactly "\0" stands for a Kafka-null value (a
/// tombstone). None for no bytes at all.
pub fn framed_record(data: &[u8]) -> Option<SourceRecord> {
    let (&split, rest) = data.split_first()?;
    let (key, value) = if split == 0xff {
        (None, rest)
    } else {
        let at = (split as usize).min(rest.len());
        (Some(rest[..at].to_vec()), &rest[at..])
    };
    let value = if value == b"\0" { None } else { Some(value.to_vec()) };
    Some(SourceRecord {
        lineage: Lineage { topic: TOPIC.into(), partition: 3, offset: 7 },
        key: key.map(Into::into),
        value: value.map(Into::into),
        headers: Vec::new(),
        timestamp_ms: None,
        generation: 0,
    })
}

/// Walks what decoding gave, as the pipeline would: Debug reaches every value
/// of a change; an error's message and kind are shown to operators and put in
/// dead-letter headers.
pub fn walk(decoded: Result<Decoded, DecodeError>) {
    match decoded {
        Ok(Decoded::Change(event)) => {
            std::hint::black_box(format!("{event:?}"));
        }
        Ok(_) => {}
        Err(e) => {
            std::hint::black_box((e.to_string(), e.kind()));
        }
    }
}

/// Makes a stack overflow a reported crash with a saved input.
///
/// Without a sanitizer, libFuzzer's SIGSEGV handler runs on the thread's own
/// stack; after a stack overflow that stack is gone, so the process dies with
/// no report and no crash-* file. This gives the thread an alternate signal
/// stack and adds SA_ONSTACK to the handler libFuzzer installed, so the
/// handler runs and writes the input like for any other crash. Call it at the
/// start of every input (it acts once): libFuzzer installs its handlers after
/// `init`, before the first input.
pub fn report_stack_overflows() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        const SIZE: usize = 1 << 20;
        let stack: &'static mut [u8] = Box::leak(vec![0u8; SIZE].into_boxed_slice());
        // SAFETY: the alternate stack is leaked, so it outlives the thread;
        // the handlers are only re-registered with one more flag.
        unsafe {
            let ss = libc::stack_t { ss_sp: stack.as_mut_ptr().cast(), ss_flags: 0, ss_size: SIZE };
            if libc::sigaltstack(&ss, std::ptr::null_mut()) != 0 {
                return;
            }
            for sig in [libc::SIGSEGV, libc::SIGBUS] {
                let mut act: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut act) == 0 && act.sa_sigaction != libc::SIG_DFL {
                    act.sa_flags |= libc::SA_ONSTACK;
                    libc::sigaction(sig, &act, std::ptr::null_mut());
                }
            }
        }
    });
}
