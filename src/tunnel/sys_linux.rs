//! Linux system calls of the data plane: `recvmmsg`/`sendmmsg` batches,
//! UDP GSO and GRO, forced socket buffers, and the fwmark. Selected by `tunnel/mod.rs`;
//! `sys_macos.rs` has the same names.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::libc;
use nix::sys::socket::{
    sendmmsg, sendmsg, setsockopt, sockopt, ControlMessage, MsgFlags, MultiHeaders, SockaddrLike,
    SockaddrStorage,
};

use super::batch::{Datagrams, Slots, BATCH, SEND_BATCH};

/// Whether a run of datagrams can leave in one send.
#[cfg(test)]
pub const GSO: bool = true;

/// Segments per GSO send: the kernel's UDP_MAX_SEGMENTS (64 before 6.5).
const MAX_GSO_SEGMENTS: usize = 64;

/// The receive side's `recvmmsg` arguments: sender addresses and control
/// buffers, one per message, kept between calls so a receive allocates
/// nothing. (nix's `recvmmsg` does not reset each header's control length
/// between calls, so after a message without a control message the next
/// one's UDP GRO size is lost: hence our own call.)
pub struct RecvHeaders {
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    cmsgs: Box<[[u64; CMSG_WORDS]; BATCH]>,
}

/// One control message of an int (UDP_GRO), in 8-byte words so that it is
/// aligned for `cmsghdr`: CMSG_SPACE(4) is 24 bytes on 64-bit Linux.
const CMSG_WORDS: usize = 4;

impl RecvHeaders {
    pub fn new() -> RecvHeaders {
        RecvHeaders {
            // SAFETY: sockaddr_storage is plain data; all-zero is valid.
            addrs: Box::new(unsafe { std::mem::zeroed() }),
            cmsgs: Box::new([[0; CMSG_WORDS]; BATCH]),
        }
    }
}

/// The send side's headers, and whether GSO still works on this socket.
///
/// nix's preallocated `mmsghdr` array holds raw pointers, so it is not
/// `Send`; but they point only into its own boxed address storage and at
/// iovecs that every call rewrites before use, and the value is never shared,
/// so moving it to another thread (a tokio worker) is sound.
pub struct SendHeaders {
    headers: MultiHeaders<SockaddrStorage>,
    gso: bool,
}

// SAFETY: see the type's comment: owned, unshared, pointers refreshed per call.
unsafe impl Send for SendHeaders {}

impl SendHeaders {
    pub fn new() -> SendHeaders {
        SendHeaders {
            headers: MultiHeaders::preallocate(SEND_BATCH, None),
            gso: true,
        }
    }
}

/// Ask for UDP GRO: runs of datagrams from one sender arrive as one
/// message. Best effort: a kernel without it (before 5.0) delivers them
/// one by one, which the receive path handles the same.
pub fn enable_gro(s: &socket2::Socket) {
    use std::os::fd::AsFd;
    if let Err(e) = setsockopt(&s.as_fd(), sockopt::UdpGroSegment, &true) {
        tracing::debug!(error = %e, "UDP GRO not available");
    }
}

/// Up to [`BATCH`] messages into `slots`, with their lengths, GRO strides
/// (0: a single datagram) and senders.
pub fn recv(
    fd: RawFd,
    headers: &mut RecvHeaders,
    slots: &mut Slots,
    lens: &mut [usize; BATCH],
    strides: &mut [usize; BATCH],
    from: &mut [Option<SocketAddr>; BATCH],
) -> io::Result<usize> {
    let mut chunks = slots.buf.chunks_mut(slots.slot);
    let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|_| {
        let c = chunks.next().expect("BATCH slots");
        libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        }
    });
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, m) in msgs.iter_mut().enumerate() {
        let h = &mut m.msg_hdr;
        h.msg_name = (&mut headers.addrs[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = headers.cmsgs[i].as_mut_ptr().cast();
        h.msg_controllen = std::mem::size_of::<[u64; CMSG_WORDS]>() as _;
    }
    // SAFETY: every pointer in `msgs` points into buffers that outlive the
    // call and have the lengths given.
    let rc = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = rc as usize;
    for i in 0..n {
        let h = &msgs[i].msg_hdr;
        lens[i] = msgs[i].msg_len as usize;
        from[i] = sockaddr_to_std(&headers.addrs[i], h.msg_namelen);
        strides[i] = gro_size(h);
    }
    Ok(n)
}

/// The UDP_GRO segment size among a received message's control messages.
fn gro_size(h: &libc::msghdr) -> usize {
    // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG
    // macros walk only within it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                return usize::try_from(size).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    0
}

fn sockaddr_to_std(a: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    // SAFETY: the storage is valid for `len` bytes as the kernel wrote it.
    let a = unsafe {
        SockaddrStorage::from_raw((a as *const libc::sockaddr_storage).cast(), Some(len))
    }?;
    to_std(&a)
}

/// Datagrams `first..` of `d`, as many as one system call takes: a run of
/// equal-sized datagrams to one peer as one GSO `sendmsg`, else the
/// datagrams up to the next such run as one `sendmmsg`.
pub fn send(
    fd: RawFd,
    headers: &mut SendHeaders,
    d: &Datagrams<'_>,
    first: usize,
) -> io::Result<usize> {
    let mut gso = headers.gso;
    if gso {
        let run = d.run(first, MAX_GSO_SEGMENTS);
        if run > 1 {
            match send_gso(fd, d, first, run) {
                Ok(()) => return Ok(run),
                // A device on the way out that cannot segment: never try
                // again on this socket.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    tracing::debug!(error = %e, "UDP GSO refused; sending datagrams singly");
                    headers.gso = false;
                    gso = false;
                }
                // Segments larger than the route's MTU (a TUN MTU raised
                // above it): these go singly, and the kernel fragments them.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => gso = false,
                Err(e) => return Err(e),
            }
        }
    }
    // Up to the next run worth a GSO send.
    let mut last = first + 1;
    while last < d.lens.len() && !(gso && d.run(last, MAX_GSO_SEGMENTS) > 1) {
        last += 1;
    }
    let count = last - first;
    let mut addrs: [Option<SockaddrStorage>; SEND_BATCH] = [None; SEND_BATCH];
    for (a, to) in addrs.iter_mut().zip(&d.to[first..last]) {
        *a = to.map(SockaddrStorage::from);
    }
    let iovs: [[IoSlice<'_>; 1]; SEND_BATCH] = std::array::from_fn(|i| {
        let k = (first + i).min(last - 1);
        [IoSlice::new(d.get(k))]
    });
    let cmsgs: [ControlMessage<'_>; 0] = [];
    let sent = sendmmsg(
        fd,
        &mut headers.headers,
        iovs[..count].iter(),
        &addrs[..count],
        cmsgs,
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?
    .count();
    Ok(sent.max(1))
}

/// Datagrams `first..first + run`, contiguous in the batch, as one send the
/// kernel cuts at the first one's size.
fn send_gso(fd: RawFd, d: &Datagrams<'_>, first: usize, run: usize) -> io::Result<()> {
    let start = d.starts[first];
    let end = d.starts[first + run - 1] + d.lens[first + run - 1];
    let segment =
        u16::try_from(d.lens[first]).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let to = d.to[first].map(SockaddrStorage::from);
    let iov = [IoSlice::new(&d.buf[start..end])];
    sendmsg(
        fd,
        &iov,
        &[ControlMessage::UdpGsoSegments(&segment)],
        MsgFlags::MSG_DONTWAIT,
        to.as_ref(),
    )
    .map_err(io::Error::from)?;
    Ok(())
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
