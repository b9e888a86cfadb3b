//! TCP MD5 signatures (RFC 2385) on a socket, for BGP passwords.
//!
//! Linux takes the key per peer address through `setsockopt(IPPROTO_TCP, TCP_MD5SIG)` with a
//! `struct tcp_md5sig`. Neither libc, nix nor socket2 wraps that struct, so it is laid out here
//! by hand (its layout is fixed kernel ABI, `include/uapi/linux/tcp.h`) and passed as bytes; the
//! one `setsockopt` call is the only unsafe code.
//!
//! On a listening socket a key applies to connections accepted from that address; on a
//! connecting socket it must be set before `connect`.
#![allow(
    unsafe_code,
    reason = "setsockopt(TCP_MD5SIG) has no safe wrapper in libc, nix or socket2"
)]

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// `sizeof(struct __kernel_sockaddr_storage)`.
const SOCKADDR_STORAGE: usize = 128;
/// `TCP_MD5SIG_MAXKEYLEN`.
pub const MAX_KEY_LEN: usize = 80;
/// `sizeof(struct tcp_md5sig)`: address, flags (1), prefix length (1), key length (2),
/// ifindex (4), key.
const STRUCT_LEN: usize = SOCKADDR_STORAGE + 1 + 1 + 2 + 4 + MAX_KEY_LEN;

/// Sets (`Some`) or removes (`None`) the MD5 key for segments to and from `peer` on `socket`.
pub fn set_key(socket: &impl AsRawFd, peer: IpAddr, key: Option<&[u8]>) -> io::Result<()> {
    let key = key.unwrap_or_default();
    if key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "BGP password is {} bytes; TCP MD5 allows at most {MAX_KEY_LEN}",
                key.len()
            ),
        ));
    }
    let buf = encode(peer, key);
    // SAFETY: `buf` is a valid, initialised `struct tcp_md5sig` of exactly `STRUCT_LEN` bytes
    // that outlives the call; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            buf.as_ptr().cast(),
            STRUCT_LEN as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        // Removing a key that was never set is not an error for us.
        if key.is_empty() && e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(());
        }
        Err(io::Error::new(
            e.kind(),
            format!("setting the TCP MD5 key for {peer}: {e}"),
        ))
    }
}

/// The bytes of a `struct tcp_md5sig` for `peer` and `key`.
fn encode(peer: IpAddr, key: &[u8]) -> [u8; STRUCT_LEN] {
    let mut buf = [0u8; STRUCT_LEN];
    match peer {
        IpAddr::V4(a) => {
            // struct sockaddr_in: family (host order), port (0), address.
            buf[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            buf[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            // struct sockaddr_in6: family, port, flowinfo, address, scope id.
            buf[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            buf[8..24].copy_from_slice(&a.octets());
        }
    }
    let at = SOCKADDR_STORAGE + 2;
    // Key length fits u16: checked against MAX_KEY_LEN above.
    buf[at..at + 2].copy_from_slice(&(key.len() as u16).to_ne_bytes());
    let key_at = SOCKADDR_STORAGE + 8;
    buf[key_at..key_at + key.len()].copy_from_slice(key);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_kernel_struct() {
        let b = encode("198.18.0.2".parse().unwrap(), b"secret");
        assert_eq!(b.len(), 216);
        assert_eq!(&b[4..8], &[198, 18, 0, 2]);
        assert_eq!(u16::from_ne_bytes([b[130], b[131]]), 6);
        assert_eq!(&b[136..142], b"secret");
        let b6 = encode("fd00:198:18::2".parse().unwrap(), b"k");
        assert_eq!(u16::from_ne_bytes([b6[0], b6[1]]), libc::AF_INET6 as u16);
        assert_eq!(b6[23], 2);
    }

    #[test]
    fn a_socket_takes_and_drops_a_key() {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer: IpAddr = "127.0.0.2".parse().unwrap();
        set_key(&s, peer, Some(b"pw")).unwrap();
        set_key(&s, peer, None).unwrap();
        let err = set_key(&s, peer, Some(&[b'x'; 81])).unwrap_err();
        assert!(err.to_string().contains("at most 80"), "{err}");
    }
}
