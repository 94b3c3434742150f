"""brewnet's DIGITS server (``brewnet serve``): jobs as subprocesses of the brewnet CLI, a
scheduler with resource slots, DIGITS' REST routes, brewnet's own ``/api/v1`` JSON API, a
SQLAlchemy store (SQLite file by default, PostgreSQL by URL) and real authentication.

Layout:
    config.py        ServerConfig: the command line's settings and the limits
    errors.py        ApiError / FormErrors / job errors: every bad request becomes a 4xx JSON answer
    threads.py       in_thread(): blocking work (database, files, decoding) off the event loop
    store/           the job store (every query of jobs, users, tokens), SQLAlchemy models, the
                     database and its Alembic migrations
    auth.py          password hashing, API tokens, login sessions, CSRF tokens
    jobs/            job states, job directories (job.json), task command lines, progress,
                     summaries of finished jobs, what a job is given (specs.py), DIGITS' epoch
                     of an iteration (epochs.py)
    scheduler.py     the queue, resource slots, subprocesses, abort/resume, restart recovery
    digits/          DIGITS' forms, standard networks, solver arithmetic (epochs -> iterations)
    inference.py     deploy bundles of snapshots, archives, classify-one in a worker process
    service/         Server, what the routes do (shared by DIGITS' routes and /api/v1): lookups,
                     job control, DIGITS' JSON presenters, classify-one and downloads
    schemas.py       /api/v1's request and response models (also what the web pages show of a job)
    app_state.py     server_of(request): the running application's Server
    web/             the server-rendered pages (DIGITS' routes render theirs with them)
    routes/          DIGITS' routes, /api/v1, accounts, Server-Sent Events
    app.py           create_app(config): the FastAPI application
"""
