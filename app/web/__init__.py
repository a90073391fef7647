"""The dashboard: server-rendered pages on the service's own API.

``sessions`` signs the browser's cookie, ``context`` says who is looking,
``views`` turns a job into words and chart data, ``forms`` submits through
the API's route, and ``pages`` and ``auth`` are the routes.
"""
