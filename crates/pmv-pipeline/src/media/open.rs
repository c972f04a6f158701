//! The one door from a file to FFmpeg: every demuxer pmv-data runs is opened by [`open`],
//! for videos (probe, decode) and cover images alike, and every decoder it opens gets
//! [`bound_decoder`].
//!
//! The file is opened here, once, as a regular file, and FFmpeg reads that open file
//! through a custom I/O context: it is never given a name, and its `io_open` refuses, so
//! a media file cannot make it open another file or a URL (playlists, `concat`, image
//! sequences, MP4 data references) and no file name is ever a pattern (image2's `%d`).
//! The container is recognised from the bytes alone, by FFmpeg's own probe without the
//! demuxers that read files by name, and must be one the caller takes. Before that
//! demuxer reads its header, what it would allocate from the file's declarations is
//! bounded: MP4/MOV sample tables ([`super::isobmff`]) and FLV keyframe indexes
//! ([`super::flv`]) must fit in the file. Before any frame is decoded, a video stream
//! larger than 8K is refused, and every decoder (stream analysis included) refuses
//! pictures larger than that. A process-wide cap on any one FFmpeg allocation
//! ([`MAX_ALLOC`], set when the media layer initialises FFmpeg) is the second line for
//! what no check foresaw. Nothing here writes, and nothing decodes beyond stream
//! analysis.

use std::ffi::{CStr, c_char, c_int};
use std::path::Path;

use ffmpeg_next::format::context::{Input, StreamIo};
use ffmpeg_next::{self as ff, ffi};

use super::flv;
use super::isobmff::{self, Problem};
use super::{MAX_STREAMS, MediaError};

/// The largest picture decoded (8K UHD, 7680x4320); larger ones would need gigabytes of
/// frames. Videos larger are refused when opened, covers too.
pub const MAX_PIXELS: u64 = 7680 * 4320;
/// The longest side of a picture decoded.
pub const MAX_SIDE: u32 = 16384;
/// The largest single allocation FFmpeg may make: a decoded 8K picture plane of 16-bit
/// samples is 67 MB, the index of the most samples an MP4 may declare 100 MB.
pub const MAX_ALLOC: usize = 128 << 20;

/// What a file must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A video in a container the fetch stage stores: MP4/MOV/3GP, Matroska/WebM, FLV,
    /// AVI, ASF/WMV, Ogg, MPEG-PS, MPEG-TS.
    Video,
    /// A still image: PNG, WebP, BMP, GIF, TIFF or JPEG, read from its bytes.
    Image,
}

impl Kind {
    /// FFmpeg demuxer names taken; none of them reads a file by name.
    fn demuxers(self) -> &'static str {
        match self {
            Kind::Video => "mov,matroska,flv,avi,asf,ogg,mpeg,mpegts",
            Kind::Image => "png_pipe,webp_pipe,bmp_pipe,gif,tiff_pipe,jpeg_pipe",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Video => "a video container",
            Kind::Image => "an image",
        }
    }
}

/// libavformat could not read the file as `kind` (its error code `r`).
fn unreadable(path: &Path, kind: Kind, r: c_int) -> MediaError {
    corrupt(
        path,
        format!(
            "not {} FFmpeg can read: {}",
            kind.what(),
            ff::Error::from(r)
        ),
    )
}

fn corrupt(path: &Path, reason: impl Into<String>) -> MediaError {
    MediaError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn refused(path: &Path, reason: impl Into<String>) -> MediaError {
    MediaError::Refused {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// `io_open` for every context: FFmpeg may open nothing besides the file it was given.
unsafe extern "C" fn refuse_open(
    _s: *mut ffi::AVFormatContext,
    _pb: *mut *mut ffi::AVIOContext,
    _url: *const c_char,
    _flags: c_int,
    _options: *mut *mut ffi::AVDictionary,
) -> c_int {
    ffi::AVERROR(ffi::EPERM)
}

/// Opens `path` for FFmpeg as `kind`, bounded as this module says, and reads its stream
/// information: the file may be read from the returned context, and nothing else.
pub fn open(path: &Path, kind: Kind) -> Result<Input, MediaError> {
    super::init();
    let io_err = |source| MediaError::Io {
        path: path.to_owned(),
        source,
    };
    // Non-blocking, so that a FIFO under a video's name cannot stall the open; a regular
    // file reads the same either way.
    let file = {
        use fs_err::os::unix::fs::OpenOptionsExt as _;
        fs_err::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(io_err)?
    };
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(io_err(std::io::Error::other("not a regular file")));
    }
    let len = meta.len();
    if len == 0 {
        return Err(corrupt(path, "the file is empty"));
    }
    let file = file.into_file();
    // The checks read at offsets through a second handle; FFmpeg reads through the first.
    let checked = file.try_clone().map_err(io_err)?;
    let mut io = StreamIo::from_read_seek(file).map_err(|source| MediaError::Ffmpeg {
        path: path.to_owned(),
        source,
    })?;

    // The container, from the bytes alone: with no file name, no demuxer that reads
    // files by name (image2 and its patterns) can take part.
    let mut format: *const ffi::AVInputFormat = std::ptr::null();
    // SAFETY: a valid read context; FFmpeg keeps what it read buffered in it.
    let score = unsafe {
        ffi::av_probe_input_buffer2(
            io.as_mut_ptr(),
            &mut format,
            std::ptr::null(),
            std::ptr::null_mut(),
            0,
            0,
        )
    };
    if score < 0 || format.is_null() {
        let e = ff::Error::from(score.min(-1));
        return Err(corrupt(
            path,
            format!("not {} FFmpeg can read: {e}", kind.what()),
        ));
    }
    // SAFETY: demuxer names are static NUL-terminated strings.
    let name = unsafe { CStr::from_ptr((*format).name) }
        .to_string_lossy()
        .into_owned();
    if !name
        .split(',')
        .any(|n| kind.demuxers().split(',').any(|d| d == n))
    {
        return Err(corrupt(
            path,
            format!("not {} pmv-data reads (FFmpeg sees {name})", kind.what()),
        ));
    }
    let problem = |container: &'static str| {
        move |p| match p {
            Problem::Forged(m) => {
                corrupt(path, format!("forged or damaged {container} headers: {m}"))
            }
            Problem::Refused(m) => refused(path, m),
            Problem::Io(source) => MediaError::Io {
                path: path.to_owned(),
                source,
            },
        }
    };
    match name.split(',').next() {
        Some("mov") => isobmff::check(&checked, len)
            .map(drop)
            .map_err(problem("MP4"))?,
        Some("flv") => flv::check(&checked, len).map_err(problem("FLV"))?,
        _ => {}
    }
    drop(checked);

    let mut opts = ff::Dictionary::new();
    opts.set("format_whitelist", kind.demuxers());
    opts.set("max_streams", &MAX_STREAMS.to_string());
    // SAFETY: the context is set up before avformat_open_input as the API requires
    // (custom I/O, our io_open); on failure avformat_open_input frees the context but
    // not the I/O context, which `io` still owns.
    let input = unsafe {
        let mut ctx = ffi::avformat_alloc_context();
        if ctx.is_null() {
            return Err(MediaError::Ffmpeg {
                path: path.to_owned(),
                source: ff::Error::Other { errno: ffi::ENOMEM },
            });
        }
        (*ctx).pb = io.as_mut_ptr();
        (*ctx).flags |= ffi::AVFMT_FLAG_CUSTOM_IO as c_int;
        (*ctx).io_open = Some(refuse_open);
        let mut raw = opts.disown();
        let r = ffi::avformat_open_input(&mut ctx, c"".as_ptr(), format, &mut raw);
        drop(ff::Dictionary::own(raw));
        if r < 0 {
            return Err(unreadable(path, kind, r));
        }
        Input::wrap_with_custom_io(ctx, io)
    };
    check_pictures(path, &input, kind)?;
    find_stream_info(path, &input, kind)?;
    check_pictures(path, &input, kind)?;
    Ok(input)
}

/// Reads the stream information, with every decoder it opens bounded.
fn find_stream_info(path: &Path, input: &Input, kind: Kind) -> Result<(), MediaError> {
    // SAFETY: `input` owns a valid, opened context; one options dictionary per stream
    // it has now, each freed after the call.
    unsafe {
        let ctx = input.as_ptr() as *mut ffi::AVFormatContext;
        let n = (*ctx).nb_streams as usize;
        let mut dicts: Vec<*mut ffi::AVDictionary> = vec![std::ptr::null_mut(); n];
        let pixels = std::ffi::CString::new(MAX_PIXELS.to_string()).expect("digits");
        for d in &mut dicts {
            ffi::av_dict_set(d, c"max_pixels".as_ptr(), pixels.as_ptr(), 0);
        }
        let r = ffi::avformat_find_stream_info(
            ctx,
            if n > 0 {
                dicts.as_mut_ptr()
            } else {
                std::ptr::null_mut()
            },
        );
        for d in &mut dicts {
            ffi::av_dict_free(d);
        }
        if r < 0 {
            return Err(unreadable(path, kind, r));
        }
    }
    Ok(())
}

/// Refuses a file whose video streams (not cover art) are larger than 8K.
fn check_pictures(path: &Path, input: &Input, kind: Kind) -> Result<(), MediaError> {
    for st in input.streams() {
        let p = st.parameters();
        if p.medium() != ff::media::Type::Video
            || (kind == Kind::Video
                && st
                    .disposition()
                    .contains(ff::format::stream::Disposition::ATTACHED_PIC))
        {
            continue;
        }
        // SAFETY: plain fields of the stream's parameters, alive with `input`.
        let (w, h) = unsafe { ((*p.as_ptr()).width, (*p.as_ptr()).height) };
        let (w, h) = (w.max(0) as u32, h.max(0) as u32);
        if u64::from(w) * u64::from(h) > MAX_PIXELS || w.max(h) > MAX_SIDE {
            return Err(refused(
                path,
                format!(
                    "pictures of {w}x{h} are larger than the limit of {MAX_PIXELS} pixels \
                     (7680x4320, 8K UHD) or {MAX_SIDE} a side"
                ),
            ));
        }
    }
    Ok(())
}

/// Bounds a decoder before it is opened: no picture larger than [`MAX_PIXELS`].
///
/// # Safety
/// `ctx` must be a valid codec context that is not open yet.
pub unsafe fn bound_decoder(ctx: *mut ffi::AVCodecContext) {
    // SAFETY: see the function's contract.
    unsafe { (*ctx).max_pixels = MAX_PIXELS as i64 };
}
