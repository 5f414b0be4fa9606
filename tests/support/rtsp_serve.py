"""A real RTSP server for the tests: serves one mp4v video file at rtsp://127.0.0.1:PORT/MOUNT.

Run by Debian's system python3 (python3-gi + GStreamer's RTSP server, installed by `make rtsp-server`),
not by the venv: the GObject bindings are Debian packages. The MPEG-4 stream is sent as it is in the file
(no re-encoding), paced in real time like a camera; each client connection plays the file from its start.

    /usr/bin/python3 tests/support/rtsp_serve.py VIDEO PORT MOUNT
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    video, port, mount = sys.argv[1], sys.argv[2], sys.argv[3]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{video}" ! qtdemux ! rtpmp4vpay name=pay0 pt=96 )')
    server.get_mount_points().add_factory("/" + mount, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
