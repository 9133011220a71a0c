"""Production defaults for `gunicorn -c deploy/gunicorn.conf.py 'music_facade:create_app()'` (the
image's CMD): every setting and hook of music_facade.gunicorn_conf, which documents them.

Every value can be overridden on the command line or with GUNICORN_CMD_ARGS; the MUSIC_*
variables are the knobs operators normally turn. A deployment's own gunicorn settings go below.
"""

from music_facade.gunicorn_conf import *  # noqa: F403
