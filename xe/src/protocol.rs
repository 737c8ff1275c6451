//! The thin CLI protocol, version 0.2, as spoken on `POST /cli`.
//!
//! After the client's HTTP request (no HTTP response is ever sent back), the
//! server writes [`PREFIX`] followed by its major and minor version as
//! little-endian int32s; the client reads it and answers with its own. Then
//! the server sends framed [`Message`]s (commands) and the client answers
//! some of them (responses and blobs).
//!
//! A frame is an int32 little-endian payload length followed by the payload.
//! A payload is a tagged message: int32 outer tag (Command=9, Response=10,
//! Blob=11), int32 inner tag, then the arguments. Strings are an int32 length
//! followed by the bytes; lists are an int32 count followed by the items.

use std::fmt;
use std::io::{self, Read, Write};

/// The 27-byte prefix that identifies a thin CLI server.
pub const PREFIX: &[u8; 27] = b"XenSource thin CLI protocol";
/// Protocol major version spoken here.
pub const MAJOR: i32 = 0;
/// Protocol minor version spoken here.
pub const MINOR: i32 = 2;
/// The largest request body the reference server accepts on `/cli` (200 KiB).
pub const MAX_BODY: usize = 200 * 1024;
/// Upper bound on a single frame we are prepared to decode (sanity limit).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// A command sent by the server to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print the string on stdout; the client appends a newline. Tag 0.
    Print(String),
    /// Send the named local file: the client answers `OK` and streams the
    /// file as blobs, or answers `Failed`. Tag 1.
    Load(String),
    /// Ask the user for a line of text; the client answers with blobs. Tag 3.
    Prompt,
    /// Exit with this status. Tag 4.
    Exit(i32),
    /// GET `path` (a path on the same server or an `https://` URL) and
    /// save the body to `filename` (stdout when empty). Tag 12.
    HttpGet { filename: String, path: String },
    /// PUT the local `filename` to `path`. Tag 13.
    HttpPut { filename: String, path: String },
    /// An API error: code and parameters. Tag 14.
    Error { code: String, params: Vec<String> },
    /// A debug message, shown only with `--debug`. Tag 15.
    Debug(String),
    /// Print the string on stderr as is (no newline added). Tag 16.
    PrintStderr(String),
    /// Open an interactive `CONNECT` tunnel to `path` (consoles). Tag 17.
    HttpConnect(String),
}

/// A client's answer to a server command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Tag 5.
    Ok,
    /// Tag 6.
    Failed,
    /// Heartbeat during long transfers. Tag 18.
    Wait,
}

/// Header of a chunk of streamed binary data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    /// `n` raw bytes follow this frame, outside any framing. Tag 7.
    Chunk(u32),
    /// End of the stream. Tag 8.
    End,
}

/// A framed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Outer tag 9.
    Command(Command),
    /// Outer tag 10.
    Response(Response),
    /// Outer tag 11.
    Blob(Blob),
}

impl From<Command> for Message {
    fn from(c: Command) -> Self {
        Message::Command(c)
    }
}
impl From<Response> for Message {
    fn from(r: Response) -> Self {
        Message::Response(r)
    }
}
impl From<Blob> for Message {
    fn from(b: Blob) -> Self {
        Message::Blob(b)
    }
}

/// Errors while reading the protocol.
#[derive(Debug)]
pub enum ProtocolError {
    /// The underlying stream failed.
    Io(io::Error),
    /// The stream ended early; holds the bytes read of the incomplete item.
    Eof(Vec<u8>),
    /// The peer did not start with [`PREFIX`]; holds what it sent instead.
    NotACliServer(Vec<u8>),
    /// An unknown tag in the named kind of message (`command`, ...).
    UnknownTag(&'static str, i32),
    /// The payload was shorter than its contents claim, or longer.
    Malformed(&'static str),
    /// A frame over [`MAX_FRAME`] or with a negative length.
    BadLength(i64),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Io(e) => write!(f, "I/O error: {e}"),
            ProtocolError::Eof(_) => write!(f, "unexpected end of stream"),
            ProtocolError::NotACliServer(_) => write!(f, "not a thin CLI server"),
            ProtocolError::UnknownTag(kind, n) => write!(f, "unknown {kind} tag {n}"),
            ProtocolError::Malformed(what) => write!(f, "malformed message: {what}"),
            ProtocolError::BadLength(n) => write!(f, "bad frame length {n}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

impl From<io::Error> for ProtocolError {
    fn from(e: io::Error) -> Self {
        ProtocolError::Io(e)
    }
}

// ---------------------------------------------------------------------------
// Primitives

fn put_int(buf: &mut Vec<u8>, x: i32) {
    buf.extend_from_slice(&x.to_le_bytes());
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    put_int(buf, s.len() as i32);
    buf.extend_from_slice(s.as_bytes());
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn int(&mut self) -> Result<i32, ProtocolError> {
        let b = self
            .data
            .get(self.pos..self.pos + 4)
            .ok_or(ProtocolError::Malformed("truncated int"))?;
        self.pos += 4;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, ProtocolError> {
        let len = self.int()?;
        let len = usize::try_from(len).map_err(|_| ProtocolError::Malformed("negative length"))?;
        let b = self
            .data
            .get(self.pos..self.pos + len)
            .ok_or(ProtocolError::Malformed("truncated string"))?;
        self.pos += len;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    fn list_of_strings(&mut self) -> Result<Vec<String>, ProtocolError> {
        let n = self.int()?;
        let n = usize::try_from(n).map_err(|_| ProtocolError::Malformed("negative count"))?;
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            v.push(self.string()?);
        }
        Ok(v)
    }
}

// ---------------------------------------------------------------------------
// Messages

impl Command {
    /// The command's tag on the wire.
    pub fn tag(&self) -> i32 {
        match self {
            Command::Print(_) => 0,
            Command::Load(_) => 1,
            Command::Prompt => 3,
            Command::Exit(_) => 4,
            Command::HttpGet { .. } => 12,
            Command::HttpPut { .. } => 13,
            Command::Error { .. } => 14,
            Command::Debug(_) => 15,
            Command::PrintStderr(_) => 16,
            Command::HttpConnect(_) => 17,
        }
    }

    fn encode_into(&self, buf: &mut Vec<u8>) {
        put_int(buf, self.tag());
        match self {
            Command::Print(s)
            | Command::Load(s)
            | Command::Debug(s)
            | Command::PrintStderr(s)
            | Command::HttpConnect(s) => put_string(buf, s),
            Command::Prompt => {}
            Command::Exit(n) => put_int(buf, *n),
            Command::HttpGet { filename, path } | Command::HttpPut { filename, path } => {
                put_string(buf, filename);
                put_string(buf, path);
            }
            Command::Error { code, params } => {
                put_string(buf, code);
                put_int(buf, params.len() as i32);
                for p in params {
                    put_string(buf, p);
                }
            }
        }
    }

    fn decode(c: &mut Cursor<'_>) -> Result<Command, ProtocolError> {
        Ok(match c.int()? {
            0 => Command::Print(c.string()?),
            1 => Command::Load(c.string()?),
            3 => Command::Prompt,
            4 => Command::Exit(c.int()?),
            12 => Command::HttpGet {
                filename: c.string()?,
                path: c.string()?,
            },
            13 => Command::HttpPut {
                filename: c.string()?,
                path: c.string()?,
            },
            14 => Command::Error {
                code: c.string()?,
                params: c.list_of_strings()?,
            },
            15 => Command::Debug(c.string()?),
            16 => Command::PrintStderr(c.string()?),
            17 => Command::HttpConnect(c.string()?),
            n => return Err(ProtocolError::UnknownTag("command", n)),
        })
    }
}

impl fmt::Display for Message {
    /// The reference's `string_of_message` rendering (used in diagnostics).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Command(c) => {
                write!(f, "Command ")?;
                match c {
                    Command::Print(x) => write!(f, "Print {x}"),
                    Command::Debug(x) => write!(f, "Debug {x}"),
                    Command::Load(x) => write!(f, "Load {x}"),
                    Command::HttpGet { filename, path } => {
                        write!(f, "HttpGet {path} -> {filename}")
                    }
                    Command::HttpPut { filename, path } => {
                        write!(f, "HttpPut {path} -> {filename}")
                    }
                    Command::HttpConnect(x) => write!(f, "HttpConnect {x}"),
                    Command::Prompt => write!(f, "Prompt"),
                    Command::Exit(x) => write!(f, "Exit {x}"),
                    Command::Error { code, params } => {
                        write!(f, "Error {code} [ {}]", params.join("; "))
                    }
                    Command::PrintStderr(x) => write!(f, "PrintStderr {x}"),
                }
            }
            Message::Response(r) => write!(
                f,
                "Response {}",
                match r {
                    Response::Ok => "OK",
                    Response::Wait => "Wait",
                    Response::Failed => "Failed",
                }
            ),
            Message::Blob(Blob::Chunk(n)) => write!(f, "Blob Chunk {n}"),
            Message::Blob(Blob::End) => write!(f, "Blob End"),
        }
    }
}

impl Message {
    /// The payload of a frame (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16);
        match self {
            Message::Command(c) => {
                put_int(&mut buf, 9);
                c.encode_into(&mut buf);
            }
            Message::Response(r) => {
                put_int(&mut buf, 10);
                put_int(
                    &mut buf,
                    match r {
                        Response::Ok => 5,
                        Response::Failed => 6,
                        Response::Wait => 18,
                    },
                );
            }
            Message::Blob(b) => {
                put_int(&mut buf, 11);
                match b {
                    Blob::Chunk(n) => {
                        put_int(&mut buf, 7);
                        buf.extend_from_slice(&n.to_le_bytes());
                    }
                    Blob::End => put_int(&mut buf, 8),
                }
            }
        }
        buf
    }

    /// A whole frame: int32 length then the payload.
    pub fn encode_frame(&self) -> Vec<u8> {
        let payload = self.encode();
        let mut buf = Vec::with_capacity(payload.len() + 4);
        put_int(&mut buf, payload.len() as i32);
        buf.extend_from_slice(&payload);
        buf
    }

    /// Decodes a payload; it must be consumed exactly.
    pub fn decode(payload: &[u8]) -> Result<Message, ProtocolError> {
        let mut c = Cursor {
            data: payload,
            pos: 0,
        };
        let m = match c.int()? {
            9 => Message::Command(Command::decode(&mut c)?),
            10 => Message::Response(match c.int()? {
                5 => Response::Ok,
                6 => Response::Failed,
                18 => Response::Wait,
                n => return Err(ProtocolError::UnknownTag("response", n)),
            }),
            11 => Message::Blob(match c.int()? {
                7 => Blob::Chunk(c.int()? as u32),
                8 => Blob::End,
                n => return Err(ProtocolError::UnknownTag("blob_header", n)),
            }),
            n => return Err(ProtocolError::UnknownTag("message", n)),
        };
        if c.pos != payload.len() {
            return Err(ProtocolError::Malformed("trailing bytes in frame"));
        }
        Ok(m)
    }

    /// Incremental decoding for non-blocking servers: if `buf` starts with a
    /// whole frame, returns the message and the number of bytes it used.
    pub fn try_decode_frame(buf: &[u8]) -> Result<Option<(Message, usize)>, ProtocolError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let len = checked_len(len)?;
        if buf.len() < 4 + len {
            return Ok(None);
        }
        Ok(Some((Message::decode(&buf[4..4 + len])?, 4 + len)))
    }
}

fn checked_len(len: i32) -> Result<usize, ProtocolError> {
    match usize::try_from(len) {
        Ok(n) if n <= MAX_FRAME => Ok(n),
        _ => Err(ProtocolError::BadLength(len as i64)),
    }
}

/// The version greeting: [`PREFIX`], major, minor (35 bytes).
pub fn version_bytes(major: i32, minor: i32) -> Vec<u8> {
    let mut buf = PREFIX.to_vec();
    put_int(&mut buf, major);
    put_int(&mut buf, minor);
    buf
}

/// Writes our version greeting (both sides send one).
pub fn write_version<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    w.write_all(&version_bytes(MAJOR, MINOR))?;
    w.flush()
}

/// Reads as many bytes as are available up to `n`; fewer only at EOF.
fn read_up_to<R: Read + ?Sized>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Reads the peer's version greeting and returns `(major, minor)`.
///
/// An immediate EOF gives `Eof(empty)` (the reference client then says
/// "Unable to contact server"); a wrong prefix gives `NotACliServer` with
/// the bytes read (the client looks for `HTTP` in them).
pub fn read_version<R: Read + ?Sized>(r: &mut R) -> Result<(i32, i32), ProtocolError> {
    let prefix = read_up_to(r, PREFIX.len())?;
    if prefix.len() < PREFIX.len() {
        return Err(ProtocolError::Eof(prefix));
    }
    if prefix[..] != PREFIX[..] {
        return Err(ProtocolError::NotACliServer(prefix));
    }
    let rest = read_up_to(r, 8)?;
    if rest.len() < 8 {
        let mut all = prefix;
        all.extend_from_slice(&rest);
        return Err(ProtocolError::Eof(all));
    }
    let major = i32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let minor = i32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    Ok((major, minor))
}

/// Writes one framed message.
pub fn write_message<W: Write + ?Sized>(w: &mut W, m: &Message) -> io::Result<()> {
    w.write_all(&m.encode_frame())?;
    w.flush()
}

/// Reads one framed message.
pub fn read_message<R: Read + ?Sized>(r: &mut R) -> Result<Message, ProtocolError> {
    let head = read_up_to(r, 4)?;
    if head.len() < 4 {
        return Err(ProtocolError::Eof(head));
    }
    let len = checked_len(i32::from_le_bytes([head[0], head[1], head[2], head[3]]))?;
    let body = read_up_to(r, len)?;
    if body.len() < len {
        let mut all = head;
        all.extend_from_slice(&body);
        return Err(ProtocolError::Eof(all));
    }
    Message::decode(&body)
}

/// Sends `data` as one chunk then `End` (what the client does for `Load`
/// and `Prompt`). Empty data is sent as a zero-length chunk, like the
/// reference.
pub fn write_blob<W: Write + ?Sized>(w: &mut W, data: &[u8]) -> io::Result<()> {
    let n = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "blob over 4 GiB"))?;
    w.write_all(&Message::Blob(Blob::Chunk(n)).encode_frame())?;
    w.write_all(data)?;
    w.write_all(&Message::Blob(Blob::End).encode_frame())?;
    w.flush()
}

/// Reads a blob stream (any number of chunks, then `End`), skipping the
/// `Wait` heartbeats a client may interleave. Fails past `limit` bytes.
pub fn read_blob<R: Read + ?Sized>(r: &mut R, limit: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    loop {
        match read_message(r)? {
            Message::Blob(Blob::Chunk(n)) => {
                let n = n as usize;
                if out.len() + n > limit {
                    return Err(ProtocolError::BadLength((out.len() + n) as i64));
                }
                let data = read_up_to(r, n)?;
                if data.len() < n {
                    return Err(ProtocolError::Eof(data));
                }
                out.extend_from_slice(&data);
            }
            Message::Blob(Blob::End) => return Ok(out),
            Message::Response(Response::Wait) => {}
            _ => return Err(ProtocolError::Malformed("expected a blob")),
        }
    }
}

/// The server's end of a `/cli` connection, over any blocking stream, once
/// the HTTP request and its body have been read. Every helper flushes.
pub struct ServerConn<S> {
    stream: S,
}

impl<S: Read + Write> ServerConn<S> {
    /// Wraps the stream; call [`ServerConn::handshake`] next.
    pub fn new(stream: S) -> Self {
        ServerConn { stream }
    }

    /// Sends our version and reads the client's; returns the client's
    /// `(major, minor)`. Fails on a major mismatch as the reference does.
    pub fn handshake(&mut self) -> Result<(i32, i32), ProtocolError> {
        write_version(&mut self.stream)?;
        let v = read_version(&mut self.stream)?;
        if v.0 != MAJOR {
            return Err(ProtocolError::Malformed(
                "client protocol major version mismatch",
            ));
        }
        Ok(v)
    }

    /// Sends one command.
    pub fn send(&mut self, c: Command) -> io::Result<()> {
        write_message(&mut self.stream, &Message::Command(c))
    }

    /// Sends several commands (e.g. the output of a [`crate::render::Printer`]).
    pub fn send_all<I: IntoIterator<Item = Command>>(&mut self, cs: I) -> io::Result<()> {
        for c in cs {
            self.send(c)?;
        }
        Ok(())
    }

    /// `Print`: the client prints the string and a newline on stdout.
    pub fn print(&mut self, s: &str) -> io::Result<()> {
        self.send(Command::Print(s.to_string()))
    }

    /// `PrintStderr`: the client writes the string as is on stderr.
    pub fn print_stderr(&mut self, s: &str) -> io::Result<()> {
        self.send(Command::PrintStderr(s.to_string()))
    }

    /// `Exit`: the last command of a session.
    pub fn exit(&mut self, code: i32) -> io::Result<()> {
        self.send(Command::Exit(code))
    }

    /// Asks the client for a named file (which must have appeared as a
    /// `key=value` argument on its command line). `Ok(None)` if the client
    /// answered `Failed`.
    pub fn load(&mut self, filename: &str, limit: usize) -> Result<Option<Vec<u8>>, ProtocolError> {
        self.send(Command::Load(filename.to_string()))?;
        loop {
            match read_message(&mut self.stream)? {
                Message::Response(Response::Ok) => {
                    return read_blob(&mut self.stream, limit).map(Some)
                }
                Message::Response(Response::Failed) => return Ok(None),
                Message::Response(Response::Wait) => {}
                _ => return Err(ProtocolError::Malformed("unexpected answer to Load")),
            }
        }
    }

    /// Asks the user for a line of text (the client sends it as blobs).
    pub fn prompt(&mut self) -> Result<String, ProtocolError> {
        self.send(Command::Prompt)?;
        let data = read_blob(&mut self.stream, MAX_FRAME)?;
        Ok(String::from_utf8_lossy(&data).into_owned())
    }

    /// The reference's `user_says_yes`: prints "Type 'yes' to continue",
    /// prompts, and prints "Aborted (you typed: '...')" unless the answer is
    /// yes (case-insensitive, trimmed).
    pub fn user_says_yes(&mut self) -> Result<bool, ProtocolError> {
        self.print("Type 'yes' to continue")?;
        let answer = self.prompt()?;
        let yes = answer.trim().eq_ignore_ascii_case("yes");
        if !yes {
            self.print(&format!("Aborted (you typed: '{answer}')"))?;
        }
        Ok(yes)
    }

    /// Waits for the client's `OK`/`Failed` after an `HttpGet`/`HttpPut`
    /// (skipping `Wait` heartbeats).
    pub fn read_response(&mut self) -> Result<Response, ProtocolError> {
        loop {
            match read_message(&mut self.stream)? {
                Message::Response(Response::Wait) => {}
                Message::Response(r) => return Ok(r),
                _ => return Err(ProtocolError::Malformed("expected a response")),
            }
        }
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Gives back the stream.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's own marshal/unmarshal examples.
    fn examples() -> Vec<Message> {
        vec![
            Command::Print("Hello there".into()).into(),
            Command::Debug("this is debug output".into()).into(),
            Command::Load("ova.xml".into()).into(),
            Command::HttpGet {
                filename: "foo.export".into(),
                path: "/import".into(),
            }
            .into(),
            Command::HttpPut {
                filename: "foo.export".into(),
                path: "/export".into(),
            }
            .into(),
            Command::HttpConnect("/console?ref=x".into()).into(),
            Command::PrintStderr("oops\n".into()).into(),
            Command::Prompt.into(),
            Command::Exit(5).into(),
            Response::Ok.into(),
            Response::Failed.into(),
            Response::Wait.into(),
            Blob::Chunk(1024).into(),
            Blob::Chunk(10240).into(),
            Blob::Chunk(102400).into(),
            Blob::Chunk(1024000).into(),
            Blob::Chunk(10240000).into(),
            Blob::End.into(),
            Command::Error {
                code: "somecode".into(),
                params: vec!["a".into(), "b".into(), "c".into()],
            }
            .into(),
            Command::Error {
                code: "another".into(),
                params: vec![],
            }
            .into(),
        ]
    }

    #[test]
    fn round_trip() {
        for m in examples() {
            let payload = m.encode();
            assert_eq!(Message::decode(&payload).unwrap(), m, "{m}");
            let frame = m.encode_frame();
            let (m2, used) = Message::try_decode_frame(&frame).unwrap().unwrap();
            assert_eq!(m2, m);
            assert_eq!(used, frame.len());
            assert!(Message::try_decode_frame(&frame[..frame.len() - 1])
                .unwrap()
                .is_none());
            let mut r = &frame[..];
            assert_eq!(read_message(&mut r).unwrap(), m);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn golden_bytes() {
        // Print "hi": length 14, Command(9), Print(0), "hi" (len 2).
        assert_eq!(
            Message::from(Command::Print("hi".into())).encode_frame(),
            [14, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'h', b'i']
        );
        assert_eq!(
            Message::from(Command::Exit(1)).encode_frame(),
            [12, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(
            Message::from(Command::Prompt).encode_frame(),
            [8, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0, 0]
        );
        assert_eq!(
            Message::from(Response::Ok).encode_frame(),
            [8, 0, 0, 0, 10, 0, 0, 0, 5, 0, 0, 0]
        );
        assert_eq!(
            Message::from(Response::Failed).encode(),
            [10, 0, 0, 0, 6, 0, 0, 0]
        );
        assert_eq!(
            Message::from(Response::Wait).encode(),
            [10, 0, 0, 0, 18, 0, 0, 0]
        );
        assert_eq!(
            Message::from(Blob::Chunk(0x01020304)).encode_frame(),
            [12, 0, 0, 0, 11, 0, 0, 0, 7, 0, 0, 0, 4, 3, 2, 1]
        );
        assert_eq!(Message::from(Blob::End).encode(), [11, 0, 0, 0, 8, 0, 0, 0]);
        // Error: code string, then a list = count + strings.
        assert_eq!(
            Message::from(Command::Error {
                code: "E".into(),
                params: vec!["a".into(), "bc".into()]
            })
            .encode(),
            [
                9, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, b'E', 2, 0, 0, 0, 1, 0, 0, 0, b'a', 2, 0, 0,
                0, b'b', b'c'
            ]
        );
        assert_eq!(
            Message::from(Command::HttpGet {
                filename: "f".into(),
                path: "/p".into()
            })
            .encode(),
            [9, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, b'f', 2, 0, 0, 0, b'/', b'p']
        );
        assert_eq!(
            Message::from(Command::PrintStderr("x".into())).encode()[4..8],
            [16, 0, 0, 0]
        );
        assert_eq!(
            Message::from(Command::Debug("x".into())).encode()[4..8],
            [15, 0, 0, 0]
        );
        assert_eq!(
            Message::from(Command::Load("x".into())).encode()[4..8],
            [1, 0, 0, 0]
        );
        assert_eq!(
            Message::from(Command::HttpPut {
                filename: String::new(),
                path: String::new()
            })
            .encode()[4..8],
            [13, 0, 0, 0]
        );
        assert_eq!(
            Message::from(Command::HttpConnect("x".into())).encode()[4..8],
            [17, 0, 0, 0]
        );
    }

    #[test]
    fn version_greeting() {
        let v = version_bytes(MAJOR, MINOR);
        assert_eq!(v.len(), 35);
        assert_eq!(&v[..27], b"XenSource thin CLI protocol");
        assert_eq!(&v[27..], [0, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(read_version(&mut &v[..]).unwrap(), (0, 2));
        match read_version(&mut &b"HTTP/1.1 500 Internal Server Error\r\n"[..]) {
            Err(ProtocolError::NotACliServer(b)) => assert!(b.starts_with(b"HTTP")),
            other => panic!("{other:?}"),
        }
        match read_version(&mut &b""[..]) {
            Err(ProtocolError::Eof(b)) => assert!(b.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Message::decode(&[9, 0, 0, 0, 2, 0, 0, 0]),
            Err(ProtocolError::UnknownTag("command", 2))
        ));
        assert!(matches!(
            Message::decode(&[12, 0, 0, 0]),
            Err(ProtocolError::UnknownTag("message", 12))
        ));
        assert!(Message::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, b'a']).is_err());
        assert!(Message::decode(&[10, 0, 0, 0, 5, 0, 0, 0, 0]).is_err());
        assert!(matches!(
            Message::try_decode_frame(&[0xff, 0xff, 0xff, 0xff]),
            Err(ProtocolError::BadLength(-1))
        ));
        let mut r = &[14u8, 0, 0][..];
        assert!(matches!(read_message(&mut r), Err(ProtocolError::Eof(_))));
    }

    #[test]
    fn blobs_and_server_conn() {
        let mut out = Vec::new();
        write_blob(&mut out, b"hello").unwrap();
        let mut r = &out[..];
        assert_eq!(read_blob(&mut r, 100).unwrap(), b"hello");
        let mut r = &out[..];
        assert!(read_blob(&mut r, 3).is_err());

        // A scripted client: version, then OK + blob for Load.
        struct Duplex {
            input: std::io::Cursor<Vec<u8>>,
            output: Vec<u8>,
        }
        impl Read for Duplex {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.input.read(b)
            }
        }
        impl Write for Duplex {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.output.write(b)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut input = version_bytes(0, 2);
        input.extend(Message::from(Response::Wait).encode_frame());
        input.extend(Message::from(Response::Ok).encode_frame());
        write_blob(&mut input, b"file data").unwrap();
        write_blob(&mut input, b"yes").unwrap();
        let mut conn = ServerConn::new(Duplex {
            input: std::io::Cursor::new(input),
            output: Vec::new(),
        });
        assert_eq!(conn.handshake().unwrap(), (0, 2));
        assert_eq!(
            conn.load("f.xml", 1 << 20).unwrap().as_deref(),
            Some(&b"file data"[..])
        );
        assert!(conn.user_says_yes().unwrap());
        conn.exit(0).unwrap();
        let out = conn.into_inner().output;
        let mut r = &out[..];
        assert_eq!(read_version(&mut r).unwrap(), (0, 2));
        assert_eq!(
            read_message(&mut r).unwrap(),
            Command::Load("f.xml".into()).into()
        );
        assert_eq!(
            read_message(&mut r).unwrap(),
            Command::Print("Type 'yes' to continue".into()).into()
        );
        assert_eq!(read_message(&mut r).unwrap(), Command::Prompt.into());
        assert_eq!(read_message(&mut r).unwrap(), Command::Exit(0).into());
    }
}
