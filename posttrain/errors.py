"""The errors a user can cause and fix: the CLI prints these as one message, never a traceback."""

from posttrain.config import ConfigError
from posttrain.data import DataError
from posttrain.models import ModelError
from posttrain.rewards import RewardFunctionError
from posttrain.stages.common import StageError

USER_ERRORS = (ConfigError, DataError, ModelError, StageError, RewardFunctionError)
