"""The framework-free rules of the service: nothing in `service.core` imports flask, werkzeug,
gunicorn or gevent."""
