//! The media layer: FFmpeg (libavformat, libavcodec, libswscale) through ffmpeg-next.
//!
//! Owns every call into FFmpeg. So far it reports what the linked FFmpeg offers (library
//! versions, which decoders exist) so `pmv-data doctor` can say whether a machine can
//! decode the videos a dataset holds. It never writes files.

pub mod encode;

use serde::Serialize;

/// Decoders the seed datasets need: H.264 (PMV-400, xinpianchang), HEVC, VP9 and AV1
/// (newer Douyin and Kinetics files), and MJPEG/PNG for covers.
const DECODERS: [(&str, ffmpeg_next::codec::Id); 6] = [
    ("h264", ffmpeg_next::codec::Id::H264),
    ("hevc", ffmpeg_next::codec::Id::HEVC),
    ("vp9", ffmpeg_next::codec::Id::VP9),
    ("av1", ffmpeg_next::codec::Id::AV1),
    ("mjpeg", ffmpeg_next::codec::Id::MJPEG),
    ("png", ffmpeg_next::codec::Id::PNG),
];

#[derive(Debug, Clone, Serialize)]
pub struct MediaInfo {
    pub libavformat: String,
    pub libavcodec: String,
    pub libswscale: String,
    pub libavutil: String,
    /// Decoder name and whether this FFmpeg has it.
    pub decoders: Vec<(String, bool)>,
}

fn version(v: u32) -> String {
    format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// What the linked FFmpeg offers.
pub fn info() -> Result<MediaInfo, ffmpeg_next::Error> {
    ffmpeg_next::init()?;
    Ok(MediaInfo {
        libavformat: version(ffmpeg_next::format::version()),
        libavcodec: version(ffmpeg_next::codec::version()),
        libswscale: version(ffmpeg_next::software::scaling::version()),
        libavutil: version(ffmpeg_next::util::version()),
        decoders: DECODERS
            .iter()
            .map(|(name, id)| (name.to_string(), ffmpeg_next::decoder::find(*id).is_some()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ffmpeg_links_and_decodes_h264() {
        let info = super::info().unwrap();
        assert!(info.libavcodec.starts_with(|c: char| c.is_ascii_digit()));
        assert!(info.decoders.iter().any(|(n, ok)| n == "h264" && *ok));
    }
}
