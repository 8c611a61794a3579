"""Sans-IO RTSP client for cameras over RTSP with TCP-interleaved RTP (instead of FFmpeg's)."""
