"""relpos's built-in pretexts, registered through the relpos entry points exactly as a third-party
package's would be: ``part`` and ``part-grid`` (:mod:`.part`), ``dino``, ``pw-self``, ``sove``,
``spatial-reasoning``, ``mae``, ``mp3`` and ``droppos``, and the temporal-context tasks of Banville et
al. 2021 over windows of one recording, ``rp``, ``ts`` and ``cpc`` (their window requests in
:mod:`.recording_requests`), one module each (docs/pretexts.md)."""
