"""Stand-in of AF3's ``constants/chemical_components.py`` (v3.0.2+ shape), written for the tests.

Like AF3's: one dict per pickle path, cached, wrapped read-only by ``Ccd``,
and a user CCD updates that shared dict.  User CCDs here are JSON, not mmCIF.
"""

import functools
import json
import pickle


@functools.cache
def _load_ccd_pickle_cached(path):
  with open(path, 'rb') as f:
    return pickle.load(f)


class Ccd:
  __slots__ = ('_dict', '_ccd_pickle_path')

  def __init__(self, ccd_pickle_path, user_ccd=None):
    self._ccd_pickle_path = ccd_pickle_path
    self._dict = _load_ccd_pickle_cached(self._ccd_pickle_path)
    if user_ccd is not None:
      self._dict.update(json.loads(user_ccd))

  def __getitem__(self, key):
    return self._dict[key]

  def __contains__(self, key):
    return key in self._dict

  def __iter__(self):
    return self._dict.__iter__()

  def __len__(self):
    return len(self._dict)

  def get(self, key, default=None):
    return self._dict.get(key, default)

  def keys(self):
    return self._dict.keys()
