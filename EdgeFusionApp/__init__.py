"""EdgeFusion in the browser: the panel's workflow beside Slicer's own slice views (trame-slicer).

* :mod:`EdgeFusionApp.launcher` is ``edgefusion app``: the one address a browser opens. It checks
  the secret token of every request and starts one session process per browser session, to which
  it relays the page and its WebSocket;
* :mod:`EdgeFusionApp.session` is that process: one scene, one private folder, one user;
* :mod:`EdgeFusionApp.webapp` is its page, bound to ``EdgeFusionMRML.controller.FusionController``
  (the Slicer panel binds to the same controller);
* :mod:`EdgeFusionApp.uploads` checks uploaded files by content before Slicer reads them.

See docs/web-app.md.
"""
