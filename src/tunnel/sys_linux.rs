//! Linux system calls of the data plane: `recvmmsg`/`sendmmsg` batches,
//! forced socket buffers, and the fwmark. Selected by `tunnel/mod.rs`;
//! `sys_macos.rs` has the same names.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::libc;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

use super::batch::{Slots, BATCH};

/// nix's preallocated `mmsghdr` array. It holds raw pointers, so it is not
/// `Send`; but they point only into its own boxed address storage and at
/// iovecs that every call rewrites before use, and the value is never shared,
/// so moving it to another thread (a tokio worker) is sound.
pub struct Headers(MultiHeaders<SockaddrStorage>);

// SAFETY: see the type's comment: owned, unshared, pointers refreshed per call.
unsafe impl Send for Headers {}

impl Headers {
    pub fn new() -> Headers {
        Headers(MultiHeaders::preallocate(BATCH, None))
    }
}

/// Up to [`BATCH`] datagrams into `slots`, with their lengths and senders.
pub fn recv(
    fd: RawFd,
    headers: &mut Headers,
    slots: &mut Slots,
    lens: &mut [usize; BATCH],
    from: &mut [Option<SocketAddr>; BATCH],
) -> io::Result<usize> {
    let mut chunks = slots.buf.chunks_mut(slots.slot);
    let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
        std::array::from_fn(|_| [IoSliceMut::new(chunks.next().expect("BATCH slots"))]);
    let results = recvmmsg(
        fd,
        &mut headers.0,
        iovs.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )
    .map_err(io::Error::from)?;
    let mut n = 0;
    for msg in results {
        lens[n] = msg.bytes;
        from[n] = msg.address.and_then(|a| to_std(&a));
        n += 1;
    }
    Ok(n)
}

/// Datagrams `first..` of `slots`, as many as one `sendmmsg` takes.
pub fn send(
    fd: RawFd,
    headers: &mut Headers,
    slots: &Slots,
    lens: &[usize],
    to: &[Option<SocketAddr>],
    first: usize,
) -> io::Result<usize> {
    let count = lens.len() - first;
    let mut addrs: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
    for (a, to) in addrs.iter_mut().zip(&to[first..]) {
        *a = to.map(SockaddrStorage::from);
    }
    let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
        let k = (first + i).min(lens.len().max(1) - 1);
        [IoSlice::new(
            &slots.get(k)[..lens.get(k).copied().unwrap_or(0)],
        )]
    });
    let cmsgs: [ControlMessage<'_>; 0] = [];
    let sent = sendmmsg(
        fd,
        &mut headers.0,
        iovs[..count].iter(),
        &addrs[..count],
        cmsgs,
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?
    .count();
    Ok(sent.max(1))
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Buffers of `size` bytes each way. SO_*BUFFORCE passes rmem_max when we
/// are root; without privilege the kernel caps the plain options.
pub fn tune_buffers(s: &socket2::Socket, size: usize) {
    use std::os::fd::AsRawFd;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        let v = size as libc::c_int;
        // SAFETY: a valid socket fd and a correctly sized int option.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &v as *const _ as *const libc::c_void,
                std::mem::size_of_val(&v) as libc::socklen_t,
            )
        };
        if rc != 0 {
            let _ = s.set_recv_buffer_size(size);
            let _ = s.set_send_buffer_size(size);
        }
    }
}

/// SO_MARK, so that the tunnel's own packets can be routed around it.
pub fn set_mark(s: &socket2::Socket, mark: u32) -> io::Result<()> {
    s.set_mark(mark)
}
