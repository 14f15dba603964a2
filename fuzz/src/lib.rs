//! Helpers shared by the fuzz targets.

use std::sync::Once;

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
