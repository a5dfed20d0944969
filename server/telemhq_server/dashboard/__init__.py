"""The dashboard: server-rendered HTML pages and SVG charts, served by the server process."""
