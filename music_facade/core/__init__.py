"""The service's rules, free of any web framework or server: what it knows, not how it is asked.

Queries and their rules, the Track shape, the upstream's record model, aliases, the bounded walk
over a library's pages, the music an alias names (its pages, tracks and audio links) and the
catalogue of every problem the service answers are plain Python here, tested without sockets.
Nothing in `music_facade.core` imports flask, werkzeug, gunicorn or gevent
(tests/unit/test_imports.py). The HTTP edge (music_facade.music, music_facade.library, the Flask
app) turns requests into calls of these and their results into responses.
"""
