"""relpos's built-in pretexts, registered through the relpos entry points exactly as a third-party
package's would be: ``part`` and ``part-grid`` (:mod:`.part`), ``dino``, ``pw-self``, ``sove``,
``spatial-reasoning``, ``mae``, ``mp3`` and ``droppos``, one module each (docs/pretexts.md)."""
