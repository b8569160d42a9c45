//! macOS system calls of the data plane, under the names of `sys_linux.rs`.
//! macOS has no `recvmmsg`/`sendmmsg` and no UDP GSO or GRO: a batch is one
//! datagram per call, so the device code keeps one shape everywhere. This is
//! also what wireguard-go does on macOS.
//!
//! Why not the private `sendmsg_x`/`recvmsg_x` (quinn-udp's opt-in "fast
//! Apple datapath"): what they do wrong depends on the macOS release.
//! Before macOS 15.6 `recvmsg_x` can leave the socket locked, after which
//! the machine's loopback traffic stops until a reboot (bun, PR 34461); a
//! non-blocking `sendmsg_x` near `SO_SNDBUF` can return `EWOULDBLOCK` for
//! ever (quinn, PR 2727); Firefox's neqo keeps quinn's path off on Intel
//! Macs after failures on 10.15, and Firezone turned it off for a release
//! over a fault first seen on macOS 15.4. We support macOS 11 and run as
//! root on every Mac that installs us, and no Mac here can run such a path:
//! it waits until one can measure it (bench/README.md, issue 15).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};

use super::batch::{Datagrams, Slots, BATCH};

/// Whether a run of datagrams can leave in one send.
#[cfg(test)]
pub const GSO: bool = false;

pub struct RecvHeaders;

impl RecvHeaders {
    pub fn new() -> RecvHeaders {
        RecvHeaders
    }
}

pub struct SendHeaders;

impl SendHeaders {
    pub fn new() -> SendHeaders {
        SendHeaders
    }
}

/// No UDP GRO on macOS.
pub fn enable_gro(_: &socket2::Socket) {}

pub fn recv(
    fd: RawFd,
    _: &mut RecvHeaders,
    slots: &mut Slots,
    lens: &mut [usize; BATCH],
    strides: &mut [usize; BATCH],
    from: &mut [Option<SocketAddr>; BATCH],
) -> io::Result<usize> {
    // SAFETY: the caller holds the socket open for the duration of the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    // SAFETY: recv_from writes initialised bytes only; a MaybeUninit view of
    // an initialised buffer.
    let buf = unsafe { &mut *(slots.get_mut(0) as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    let (n, addr) = sock.recv_from(buf)?;
    lens[0] = n;
    strides[0] = 0;
    from[0] = addr.as_socket();
    Ok(1)
}

pub fn send(fd: RawFd, _: &mut SendHeaders, d: &Datagrams<'_>, first: usize) -> io::Result<usize> {
    // SAFETY: the caller holds the socket open for the duration of the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    let dest = d.to[first].expect("committed datagrams have a destination");
    sock.send_to(d.get(first), &dest.into())?;
    Ok(1)
}

/// No SO_*BUFFORCE here: ask, and take what the kernel grants.
pub fn tune_buffers(s: &socket2::Socket, size: usize) {
    let _ = s.set_recv_buffer_size(size);
    let _ = s.set_send_buffer_size(size);
}

/// fwmark is a Linux routing feature; elsewhere it is accepted and ignored,
/// as wireguard-go does.
pub fn set_mark(_: &socket2::Socket, _: u32) -> io::Result<()> {
    Ok(())
}
