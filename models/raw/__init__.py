"""Raw radar recordings -> dB spectrograms, through the field's chain; shared by `dopplergen import` and
enrolment (docs/import.md, "Raw recordings").

    from models.raw import ChainConfig, RadarParams, raw_spectrograms
    windows = raw_spectrograms(data, "1P40A01R02.dat", ChainConfig(size=64))  # [(db (64, 64), axes), ...]
"""

from models.raw.chain import DOPPLER_AXIS, raw_spectrograms, raw_to_db, raw_windows
from models.raw.files import RAW_SUFFIXES, format_dat, is_raw, parse_dat, read_raw, recording_from_array
from models.raw.params import SPEED_OF_LIGHT, ChainConfig, RadarParams, RawRecording

__all__ = ["DOPPLER_AXIS", "RAW_SUFFIXES", "SPEED_OF_LIGHT", "ChainConfig", "RadarParams", "RawRecording",
           "format_dat", "is_raw", "parse_dat", "raw_spectrograms", "raw_to_db", "raw_windows", "read_raw",
           "recording_from_array"]
